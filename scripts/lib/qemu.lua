-- The QEMU command line of a VM, built from its stored config (vm_instances.config_data).
-- This is policy: edit a copy in $XDG_CONFIG_HOME/maqet/scripts/lib/qemu.lua to change how every
-- VM is started (`maqet show-cmd NAME` prints the result).
--
-- Config keys (the published maqet's YAML keys, plus panic_device and on_panic):
--   binary     program to run (default "qemu-system-x86_64", searched in PATH)
--   memory     -m MEMORY            cpu      -smp CPU
--   display    -display X (default "none")   vga  -vga X (only when given)
--   arguments  a list; each item is
--                "nographic" or "-nographic"   -> -nographic
--                {machine = "q35"}             -> -machine q35
--                {boot = {order = "n", menu = "off"}} -> -boot menu=off,order=n
--                  (keys sorted, except driver/type/backend/id first; true/false -> on/off)
--                {enable-kvm = true} or {nographic = json null} -> -enable-kvm / -nographic
--                {machine = false}             -> nothing (a way to switch an entry off)
--   storage    a list of {name, type = qcow2|raw|virtfs, file, size, interface, backing_file,
--              mount_tag, path, security_model, readonly}
--                qcow2/raw -> -drive file=FILE,format=TYPE,if=INTERFACE (default virtio)
--                virtfs    -> -virtfs local,path=PATH,mount_tag=TAG,security_model=mapped-xattr
--
--   panic_device  false: no pvpanic device (default: -device pvpanic on x86 pc/q35 machines)
--   on_panic   QEMU's -action panic=: shutdown (default), pause, exit-failure, none
--
-- "accel kvm" is made safe: when the arguments ask for accel kvm and nothing else, the command
-- line gets `-accel kvm -accel tcg`, so QEMU falls back to TCG where /dev/kvm is missing (slower,
-- but the VM starts). Ask for `{accel = "kvm,strict"}`-style values yourself to opt out, or
-- remove this rule in your copy.
--
--   serial     -serial SERIAL (the VM then has its own serial line and no maqet console)
--
-- Unless the config sets up its own serial line (qemu.own_serial), maqet adds the serial console:
-- a chardev socket console.sock in the VM's runtime directory (`maqet console`, maqet.vm.console)
-- that also logs everything the guest prints to <data dir>/logs/<name>.console.log.
-- Finally maqet adds two QMP monitors in the VM's runtime directory: runner.qmp (held by the
-- per-VM runner for events) and qmp.sock (for `maqet qmp`, `maqet.vm.qmp`, scripts and tools).

local qemu = {}

qemu.default_binary = "qemu-system-x86_64"

--- The program name of a QEMU system emulator (`qemu-system-x86_64`, `qemu-system-aarch64`, …):
--- a config's `binary` must have it (its last path component), unless the config says
--- `binary_is_qemu: false` (a wrapper script, a test double) and so takes the program as it is.
qemu.binary_name_pattern = "^qemu%-system%-[%w_.%-]+$"

--- What `BINARY -version` prints first when BINARY is QEMU.
qemu.version_banner = "QEMU emulator version"

--- Why `config` does not run a QEMU system emulator, or nil when it does (or the config says
--- `binary_is_qemu: false`). `program` is the program it runs (default: its `binary`). The name
--- is always checked (cheap: `maqet start` does it for every row, adopted ones included); with
--- `probe`, the program is also run once with `-version` and must answer like QEMU (`maqet add`
--- and `maqet apply`, where a tenth of a second does not matter).
---@param config table the decoded config
---@param program? string
---@param probe? boolean
---@return string? problem  one clause for a message, naming the program
function qemu.binary_problem(config, program, probe)
    if config.binary_is_qemu == false then return nil end
    program = tostring(program or config.binary or qemu.default_binary)
    local base = program:match("([^/]*)$") or program
    if not base:match(qemu.binary_name_pattern) then
        return ("%s is not a QEMU system emulator (its name is not qemu-system-*); name one, or add "
            .. "'binary_is_qemu: false' to the config if it knowingly is not"):format(program)
    end
    if probe then
        local r, err = maqet.process.run({ program, "-version" }, { timeout_ms = 10000 })
        local out = r and not r.timed_out and r.code == 0 and r.stdout or ""
        if out:sub(1, 200):find(qemu.version_banner, 1, true) == nil then
            local why = "it printed something else"
            if not r then why = tostring(err)
            elseif r.timed_out then why = "no answer within 10 s"
            elseif r.signal_name then why = "ended by SIG" .. r.signal_name
            elseif r.code ~= 0 then why = "exit code " .. tostring(r.code) end
            return ("%s does not answer '-version' with '%s' (%s), so it is not QEMU; name QEMU, or add "
                .. "'binary_is_qemu: false' to the config if it knowingly is not"):format(program, qemu.version_banner, why)
        end
    end
    return nil
end
qemu.default_display = "none"
qemu.default_interface = "virtio"
--- QEMU's -action panic= when the config has no on_panic (config.lua validates the values).
qemu.default_panic_action = "shutdown"

--- The runtime directory of this maqet user ($XDG_RUNTIME_DIR/maqet, else /tmp/maqet-<uid>).
---@return string
function qemu.runtime_dir()
    return assert(maqet.runtime_dir())
end

--- The data directory (maqet.data_dir(), resolved once by the host): its logs/ holds each VM's
--- history, events and console logs.
---@return string
function qemu.data_dir()
    return maqet.data_dir()
end

--- The file-name form of a VM's name in the data directory: the name when it is a safe file
--- name (letters, digits, '.', '_', '-', not starting with '.'), else the VM's id.
local function file_stem(vm)
    local name = vm.name
    if type(name) == "string" and name:match("^[%w_%-][%w._%-]*$") then return name end
    return tostring(vm.id)
end

--- Every file of a VM, named in this one place (the runner gets them in its spec and computes
--- none). Runtime files, in <runtime dir>/<first 12 characters of its id>/ (removed when the VM
--- ends): dir, runner_qmp, client_qmp, qemu_log, runner_log, spec, console_sock, console_lock.
--- The VM's lock, outside that directory so it outlives every run: lock, <runtime dir>/locks/<id>.lock
--- (0600 in a 0700 folder; held by the VM's start, runner and QEMU, see maqet.runner.lock; never
--- removed, since a lock file unlinked while held would let a second holder in).
--- Data-dir files, in <data dir>/logs/ (kept across stops and restarts): history_log (<name>.log),
--- events_log (<name>.events.jsonl), console_log (<name>.console.log) and console_offset (where
--- the current boot's output begins in the console log).
---@param vm table a vm_instances row (needs `id`; `name` for the data-dir files)
---@return {lock: string, dir: string, runner_qmp: string, client_qmp: string, qemu_log: string, runner_log: string, spec: string, console_sock: string, console_lock: string, history_log: string|nil, events_log: string|nil, console_log: string|nil, console_offset: string|nil}
function qemu.paths(vm)
    assert(vm and vm.id, "qemu.paths: the VM row has no id")
    local root = qemu.runtime_dir()
    local dir = root .. "/" .. tostring(vm.id):sub(1, 12)
    local paths = {
        lock = root .. "/locks/" .. tostring(vm.id):gsub("[^%w._-]", "_") .. ".lock",
        dir = dir,
        runner_qmp = dir .. "/runner.qmp",
        client_qmp = dir .. "/qmp.sock",
        qemu_log = dir .. "/qemu.log",
        runner_log = dir .. "/runner.log",
        spec = dir .. "/runner.json",
        console_sock = dir .. "/console.sock",
        console_lock = dir .. "/console.lock",
    }
    local data = maqet.data_dir()
    if data then
        local logs = data .. "/logs/" .. file_stem(vm)
        paths.history_log = logs .. ".log"
        paths.events_log = logs .. ".events.jsonl"
        paths.console_log = logs .. ".console.log"
        paths.console_offset = logs .. ".console.offset"
    end
    return paths
end

--- The VM's files in the data directory (its history, events and console logs, their rotated
--- copies `<log>.1` made by maqet.history.rotate, and the console offset): what `maqet rm`
--- deletes, so a new VM given the same name does not inherit them. Empty without a data dir.
---@param vm table a vm_instances row
---@return string[]
function qemu.data_files(vm)
    local paths, out = qemu.paths(vm), {}
    for _, key in ipairs({ "history_log", "events_log", "console_log" }) do
        if paths[key] then
            out[#out + 1] = paths[key]
            out[#out + 1] = paths[key] .. ".1"
        end
    end
    if paths.console_offset then out[#out + 1] = paths.console_offset end
    return out
end

--- The decoded config of a VM row (config_data JSON), an empty table when there is none.
---@param vm table
---@return table
function qemu.config(vm)
    if type(vm.config) == "table" then return vm.config end
    local text = vm.config_data
    if text == nil or text == "" then return {} end
    local config, err = maqet.json.decode(text)
    if type(config) ~= "table" then
        error(("VM '%s' has a config_data that is not a JSON object (%s); fix it with 'maqet apply'"):format(vm.name, err or type(config)), 0)
    end
    return config
end

-- QEMU's option syntax doubles a comma inside a value.
local function escape(value)
    return (tostring(value):gsub(",", ",,"))
end

local function scalar(value)
    if value == true then return "on" end
    if value == false then return "off" end
    return escape(value)
end

local first_keys = { driver = 1, type = 2, backend = 3, id = 4 }

-- {order = "n", menu = "off"} -> "menu=off,order=n" (driver/type/backend/id first, then sorted).
local function suboptions(map)
    local keys = {}
    for k in pairs(map) do keys[#keys + 1] = tostring(k) end
    table.sort(keys, function(a, b)
        local ra, rb = first_keys[a] or 99, first_keys[b] or 99
        if ra ~= rb then return ra < rb end
        return a < b
    end)
    local parts = {}
    for _, k in ipairs(keys) do
        local v = map[k]
        if v == maqet.json.null then
            parts[#parts + 1] = k
        elseif type(v) == "table" then
            error(("arguments: the value of '%s' is nested too deeply (one level of key=value only)"):format(k), 0)
        else
            parts[#parts + 1] = k .. "=" .. scalar(v)
        end
    end
    return table.concat(parts, ",")
end

local function flag(name)
    name = tostring(name)
    if name:sub(1, 1) == "-" then return name end
    return "-" .. name
end

--- The command-line words of one `arguments` item.
---@param item string|table
---@return string[]
function qemu.argument(item)
    if type(item) == "string" then
        -- "nographic", "-nographic", or "machine q35" written as one string.
        local words = {}
        for w in item:gmatch("%S+") do words[#words + 1] = w end
        if #words > 0 then words[1] = flag(words[1]) end
        return words
    end
    if type(item) ~= "table" then
        error(("arguments: an item must be a flag or a one-key mapping, got %s"):format(type(item)), 0)
    end
    local out = {}
    local keys = {}
    for k in pairs(item) do keys[#keys + 1] = tostring(k) end
    table.sort(keys)
    for _, k in ipairs(keys) do
        local v = item[k]
        if v == false then
            -- switched off
        elseif v == true or v == maqet.json.null then
            out[#out + 1] = flag(k)
        elseif type(v) == "table" then
            out[#out + 1] = flag(k)
            out[#out + 1] = suboptions(v)
        else
            out[#out + 1] = flag(k)
            out[#out + 1] = tostring(v)
        end
    end
    return out
end

--- The command-line words for one storage entry (nothing for an unknown type, with a warning).
---@param disk table
---@return string[]
function qemu.storage(disk)
    local kind = disk.type or "qcow2"
    if kind == "qcow2" or kind == "raw" then
        if not disk.file then
            error(("storage '%s': a %s disk needs a 'file'"):format(disk.name or "?", kind), 0)
        end
        local spec = ("file=%s,format=%s,if=%s"):format(escape(disk.file), kind, escape(disk.interface or qemu.default_interface))
        if disk.readonly then spec = spec .. ",readonly=on" end
        return { "-drive", spec }
    elseif kind == "virtfs" then
        local path = disk.path or disk.file
        if not path then
            error(("storage '%s': a virtfs share needs a 'path'"):format(disk.name or "?"), 0)
        end
        local tag = disk.mount_tag or disk.name or "share"
        return { "-virtfs", ("local,path=%s,mount_tag=%s,security_model=%s"):format(
            escape(path), escape(tag), escape(disk.security_model or "mapped-xattr")) }
    end
    maqet.log.warn(("storage '%s': unknown type '%s' is ignored"):format(disk.name or "?", tostring(kind)))
    return {}
end

local function append(argv, words)
    for _, w in ipairs(words) do argv[#argv + 1] = w end
end

-- Serial devices a user can wire to a chardev of their own (`-device isa-serial,chardev=...`).
qemu.serial_devices = { ["isa-serial"] = true, ["pci-serial"] = true, ["pci-serial-2x"] = true, ["pci-serial-4x"] = true }

--- Whether the VM's config sets up its own serial line, and how (nil when it does not, and maqet
--- adds its console). Own serial: a `serial:` key, a `-serial` item in `arguments`, or a serial
--- device (isa-serial, pci-serial*) in `-device`. `-nographic` is not: it only sends the serial
--- line to stdio when no -serial is given, and maqet's -serial takes that place.
---@param config table the decoded config
---@param argv? string[] the command line so far (default: built from config.arguments)
---@return string? reason
function qemu.own_serial(config, argv)
    if config.serial ~= nil and config.serial ~= false then
        return ("its config sets 'serial: %s'"):format(tostring(config.serial))
    end
    if not argv then
        argv = {}
        for _, item in ipairs(config.arguments or {}) do append(argv, qemu.argument(item)) end
    end
    for i, w in ipairs(argv) do
        if w == "-serial" then
            return ("its arguments give '-serial %s'"):format(tostring(argv[i + 1]))
        elseif w == "-device" and argv[i + 1] then
            local driver = argv[i + 1]:match("^([^,]+)")
            if qemu.serial_devices[driver] then
                return ("its arguments add the serial device '%s'"):format(argv[i + 1])
            end
        end
    end
    return nil
end

--- Machine types (the first word of -machine) that have an ISA bus for pvpanic. `-machine none`
--- and microvm have none. No -machine at all is QEMU's default, pc.
qemu.ISA_MACHINES = { pc = true, q35 = true }

--- The panic device and QEMU's panic action: `-device pvpanic -action panic=<on_panic>` on x86
--- machines with ISA (pc, q35 and their versioned names), unless the config says
--- `panic_device: false` or its arguments already have a pvpanic device (then only the action).
--- on_panic defaults to shutdown (QEMU exits; the runner records crashed, reason guest-panic).
---@param config table
---@param words string[] the command line so far
---@return string[]
function qemu.panic_arguments(config, words)
    local binary = tostring(config.binary or qemu.default_binary)
    local machine, own_device, own_action = "pc", false, false
    for i, w in ipairs(words) do
        local nextw = words[i + 1] or ""
        if w == "-machine" or w == "-M" then
            local first = nextw:match("^([^,]*)") or ""
            machine = first:match("^type=(.*)") or first
        elseif w == "-device" and nextw:match("^pvpanic") or (w == "-device" and nextw:match("driver=pvpanic")) then
            own_device = true
        elseif w == "-action" and nextw:find("panic=", 1, true) then
            own_action = true
        end
    end
    local family = machine:match("^pc") and "pc" or machine:match("^q35") and "q35" or machine
    local x86 = binary:find("x86_64", 1, true) or binary:find("i386", 1, true)
    local out = {}
    if not own_device then
        if config.panic_device == false or not x86 or not qemu.ISA_MACHINES[family] then return out end
        append(out, { "-device", "pvpanic" })
    end
    if not own_action then
        append(out, { "-action", "panic=" .. tostring(config.on_panic or qemu.default_panic_action) })
    end
    return out
end

--- The full QEMU argv for `vm` with its monitors in `paths` (from qemu.paths).
---@param vm table a vm_instances row
---@param paths? table default qemu.paths(vm)
---@return string[]
function qemu.argv(vm, paths)
    paths = paths or qemu.paths(vm)
    local config = qemu.config(vm)
    local argv = { config.binary or qemu.default_binary }
    append(argv, { "-name", "guest=" .. escape(vm.name) })
    if config.memory ~= nil then append(argv, { "-m", tostring(config.memory) }) end
    if config.cpu ~= nil then append(argv, { "-smp", tostring(config.cpu) }) end
    append(argv, { "-display", tostring(config.display or qemu.default_display) })
    if config.vga ~= nil then append(argv, { "-vga", tostring(config.vga) }) end

    local accels = 0
    local kvm_only = false
    for _, item in ipairs(config.arguments or {}) do
        local words = qemu.argument(item)
        for i, w in ipairs(words) do
            if w == "-accel" then
                accels = accels + 1
                kvm_only = words[i + 1] == "kvm"
            end
        end
        append(argv, words)
    end
    if accels == 1 and kvm_only then
        append(argv, { "-accel", "tcg" })
    end
    append(argv, qemu.panic_arguments(config, argv))

    if config.serial ~= nil and config.serial ~= false then
        append(argv, { "-serial", tostring(config.serial) })
    end

    for _, disk in ipairs(config.storage or {}) do
        append(argv, qemu.storage(disk))
    end

    if not qemu.own_serial(config, argv) then
        -- The serial console: a socket for `maqet console` and scripts, and a log of everything
        -- the guest prints (appended across boots; lib/console.lua rotates it before a start).
        append(argv, {
            "-chardev", ("socket,id=maqet-console,path=%s,server=on,wait=off,logfile=%s,logappend=on"):format(
                escape(paths.console_sock), escape(paths.console_log)),
            "-serial", "chardev:maqet-console",
        })
    end

    for _, monitor in ipairs({ { "maqet-runner", paths.runner_qmp }, { "maqet-client", paths.client_qmp } }) do
        append(argv, {
            "-chardev", ("socket,id=%s,path=%s,server=on,wait=off"):format(monitor[1], escape(monitor[2])),
            "-mon", ("chardev=%s,mode=control"):format(monitor[1]),
        })
    end
    return argv
end

--- `argv` as one line a POSIX shell reads back as the same words.
---@param argv string[]
---@return string
function qemu.shell_quote(argv)
    local out = {}
    for i, w in ipairs(argv) do
        if w ~= "" and not w:find("[^%w%-%+_=/,.:@%%]") then
            out[i] = w
        else
            out[i] = "'" .. w:gsub("'", [['\'']]) .. "'"
        end
    end
    return table.concat(out, " ")
end

return qemu
