-- maqet qmp NAME COMMAND [ARGS] and its helpers (maqet qmp NAME keys|type|screendump|pause|
-- resume|device-add|device-del|run ..., also in the published order maqet qmp HELPER NAME ...).
--
-- args.action:
--   "socket"      which monitor a raw command goes to: {name, socket} of a VM whose QEMU runs
--                 (the command itself sends it and prints QEMU's reply as it came);
--   "keys"        send-key with args.keys (qcodes, pressed together), hold-time args.hold_time_ms;
--   "type"        one send-key per character of args.text (lib/keyboard.lua); a text with any
--                 character that cannot be typed is refused before anything is sent;
--   "screendump"  args.file (relative to the caller's directory) as PNG when QEMU takes
--                 screendump's `format` argument and the file does not end in .ppm, else PPM;
--   "pause", "resume"  the pause/resume workflows (lib/vm.lua vm.pause / vm.resume);
--   "device-add"  device_add with args.device ({driver, id, properties...});
--   "device-del"  device_del id = args.id.
-- The VM is looked up by lib/vm.lua (vm.get), which also records the truth of its status first.
local vm = require("maqet.lib.vm")
local status = require("maqet.lib.status")
local qemu = require("maqet.lib.qemu")
local keyboard = require("maqet.lib.keyboard")

local array = maqet.json.array

-- The row of a VM whose QEMU runs, or maqet.error: not found (5), not running (1).
local function running_row(name)
    local row, message, code = vm.get(name)
    if not row then vm.check(nil, message, code) end
    if not row.alive or not status.has_qemu(row.status) then
        maqet.log.info(("VM '%s': its status is %s"):format(name, tostring(row.status)))
        maqet.error(("VM '%s' is not running"):format(name), "failure")
    end
    return row
end

local function socket_of(row)
    return row.qmp_socket_path or qemu.paths(row).client_qmp
end

-- Runs `command` on the VM's client monitor; the return value or maqet.error.
local function execute(row, conn, command, args, timeout_ms)
    local result, desc, class = conn:execute(command, args, { timeout_ms = timeout_ms })
    if result == nil then
        if class == "ETIMEDOUT" then
            maqet.error(("VM '%s': %s: %s"):format(row.name, command, tostring(desc)), "failure")
        end
        maqet.error(("QMP error %s: %s"):format(tostring(class), tostring(desc)), "failure")
    end
    return result
end

local function connect(row, timeout_ms)
    local conn, err, code = maqet.qmp.connect(socket_of(row), { timeout_ms = timeout_ms })
    if not conn then
        if code == "ENOENT" or code == "ECONNREFUSED" then
            maqet.log.info(("VM '%s': %s"):format(row.name, tostring(err)))
            maqet.error(("VM '%s' is not running"):format(row.name), "failure")
        end
        maqet.error(("VM '%s': %s"):format(row.name, tostring(err)), "failure")
    end
    return conn
end

local function send_keys(row, conn, keys, hold_ms, timeout_ms)
    local list = array()
    for _, k in ipairs(keys) do list[#list + 1] = { type = "qcode", data = k } end
    execute(row, conn, "send-key", { keys = list, ["hold-time"] = hold_ms }, timeout_ms)
end

local actions = {}

function actions.socket(args)
    local row = running_row(args.name)
    return { name = row.name, socket = socket_of(row) }
end

function actions.keys(args, row, conn, timeout_ms)
    local keys = args.keys
    if type(keys) ~= "table" or #keys == 0 then
        maqet.error("qmp keys: name at least one key (a QEMU qcode such as ctrl, alt, delete, ret, a, f1)", "usage")
    end
    send_keys(row, conn, keys, args.hold_time_ms, timeout_ms)
    return { name = row.name, action = "keys", keys = array(keys), hold_time_ms = args.hold_time_ms }
end

function actions.type(args, row, conn, timeout_ms)
    for _, chord in ipairs(args.chords) do
        send_keys(row, conn, chord, args.hold_time_ms, timeout_ms)
    end
    local chords = array()
    for _, chord in ipairs(args.chords) do chords[#chords + 1] = array(chord) end
    return { name = row.name, action = "type", characters = #args.chords, chords = chords, hold_time_ms = args.hold_time_ms }
end

function actions.screendump(args, row, conn, timeout_ms)
    local file = args.file
    if type(file) ~= "string" or file == "" then maqet.error("qmp screendump: name the file to write", "usage") end
    if file:sub(1, 1) ~= "/" then file = maqet.fs.cwd() .. "/" .. file end
    local format = file:lower():find("%.ppm$") and "ppm" or "png"
    local ok, desc, class
    if format == "png" then
        ok, desc, class = conn:execute("screendump", { filename = file, format = "png" }, { timeout_ms = timeout_ms })
        if ok == nil and class == "GenericError" and tostring(desc):find("format", 1, true) then
            -- A QEMU older than 7.1 writes PPM only.
            maqet.log.warn(("this QEMU cannot write PNG screendumps; %s is a PPM image"):format(file))
            format = "ppm"
        elseif ok == nil then
            maqet.error(("QMP error %s: %s"):format(tostring(class), tostring(desc)), "failure")
        end
    end
    if format == "ppm" then execute(row, conn, "screendump", { filename = file }, timeout_ms) end
    return { name = row.name, action = "screendump", file = file, format = format }
end

function actions.device_add(args, row, conn, timeout_ms)
    local device = args.device
    execute(row, conn, "device_add", device, timeout_ms)
    return { name = row.name, action = "device-add", driver = device.driver, id = device.id }
end

function actions.device_del(args, row, conn, timeout_ms)
    execute(row, conn, "device_del", { id = args.id }, timeout_ms)
    return { name = row.name, action = "device-del", id = args.id }
end

return {
    description = "Run a QMP command or helper (keys, type, screendump, pause, resume, device-add, device-del) on a running VM",
    run = function(args)
        if type(args.name) ~= "string" or args.name == "" then maqet.error("qmp: a VM name is required", "usage") end
        local action = args.action
        if action == "pause" then return vm.check(vm.pause(args.name)) end
        if action == "resume" then return vm.check(vm.resume(args.name)) end
        if action == "type" then
            -- Checked before the VM is even looked at: nothing is sent for a text that cannot be typed.
            local chords, message = keyboard.plan(args.text)
            if not chords then maqet.error("qmp type: " .. message .. "; nothing was sent", "usage") end
            args.chords = chords
        end
        local fn = actions[(tostring(action)):gsub("-", "_")]
        if not fn then
            maqet.error(("qmp: unknown helper '%s' (keys, type, screendump, pause, resume, device-add, device-del, run)"):format(
                tostring(action)), "usage")
        end
        if action == "socket" then return fn(args) end
        args.hold_time_ms = math.tointeger(args.hold_time_ms) or 100
        local timeout_ms = math.max(1, math.floor((tonumber(args.timeout) or 10) * 1000))
        local row = running_row(args.name)
        local conn <close> = connect(row, timeout_ms)
        return fn(args, row, conn, timeout_ms)
    end,
}
