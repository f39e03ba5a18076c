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
--                {boot = {order = "n", menu = "off"}} -> -boot order=n,menu=off
--                {enable-kvm = true} or {nographic = json null} -> -enable-kvm / -nographic
--                {machine = false}             -> nothing (a way to switch an entry off)
--                {blockdev = {driver = "qcow2", file = {driver = "file"}}} -> -blockdev driver=qcow2,file.driver=file
--                  (keys in the file's order; nested mappings dotted at any depth; true/false -> on/off)
--                {smp = {2, "sockets=1"}}     -> -smp 2,sockets=1 (a list joined with commas)
--                {display = "none", ["show-cursor"] = "on"} -> -display none,show-cursor=on
--                  (several keys: the first is the option, the others its key=value parts)
--   args       a list of words given to QEMU verbatim, after the arguments
--   storage    a list of {name, type = qcow2|raw|virtfs, file, size, interface, backing_file,
--              mount_tag, path, security_model, readonly, options}
--                qcow2/raw -> -drive file=FILE,if=INTERFACE (default virtio),format=TYPE
--                virtfs    -> -virtfs local,path=PATH,mount_tag=TAG,security_model=mapped-xattr,id=NAME
--                             [,readonly=on][,other options k=v]
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
--- virtfs security_model when a share names none (the published maqet: passthrough, which needs
--- root to set file owners; mapped-xattr works for any user).
qemu.default_security_model = "mapped-xattr"
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

--- Whether some `arguments` item is a mapping with several keys or a nested mapping: the items
--- whose rendering depends on the order of their keys.
local function order_matters(arguments)
    if type(arguments) ~= "table" then return false end
    for _, item in ipairs(arguments) do
        if type(item) == "table" then
            local n = 0
            for _, v in pairs(item) do
                n = n + 1
                if n > 1 or (type(v) == "table" and next(v) ~= nil) then return true end
            end
        end
    end
    return false
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
    -- A row maqet never stored (the published maqet's, whose JSON kept the file's key order) is
    -- decoded again with each object's key order where an `arguments` item has one that matters
    -- ({netdev: user, id: n0} is -netdev user,id=n0); maqet stores such items as strings, so its
    -- own rows skip this (and the load of config.lua it needs).
    if order_matters(config.arguments) and require("maqet.lib.config").unchecked(vm) then
        config = maqet.json.decode(text, { ordered = true })
    end
    return config
end

-- QEMU's option syntax doubles a comma inside a value.
local function escape(value)
    return (tostring(value):gsub(",", ",,"))
end

local null = maqet.json.null

--- Whether `v` is a list: a table maqet.json marked as an array, or a non-empty sequence (the
--- one test of "list or mapping" that config.lua and the rendering share).
---@param v any
---@return boolean
function qemu.is_list(v)
    if type(v) ~= "table" then return false end
    local mt = getmetatable(v)
    if mt and mt.__jsontype == "array" then return true end
    local n = 0
    for _ in pairs(v) do n = n + 1 end
    return n > 0 and n == #v
end
local is_list = qemu.is_list

local first_keys = { driver = 1, type = 2, backend = 3, id = 4 }

--- The keys of a mapping in the order they are rendered: the document order when the mapping
--- comes straight from maqet.yaml (its metatable's `__keys`; QEMU options are order-sensitive,
--- and the published maqet renders them in the file's order). A mapping without that order (a
--- stored config is JSON with sorted keys) falls back to: keys with a null value first (the
--- positional part, `{q35: null, accel: kvm}` → `q35,accel=kvm`), then driver, type, backend,
--- id, then the rest sorted.
---@param map table
---@return string[]
function qemu.keys(map)
    local keys, seen = {}, {}
    local mt = getmetatable(map)
    if type(mt) == "table" and type(mt.__keys) == "table" then
        for _, k in ipairs(mt.__keys) do
            if map[k] ~= nil and not seen[k] then keys[#keys + 1] = k; seen[k] = true end
        end
    end
    local rest = {}
    for k in pairs(map) do
        if not seen[tostring(k)] then rest[#rest + 1] = tostring(k) end
    end
    table.sort(rest, function(a, b)
        local na, nb = map[a] == null and 0 or 1, map[b] == null and 0 or 1
        if na ~= nb then return na < nb end
        local ra, rb = first_keys[a] or 99, first_keys[b] or 99
        if ra ~= rb then return ra < rb end
        return a < b
    end)
    for _, k in ipairs(rest) do keys[#keys + 1] = k end
    return keys
end

-- A scalar inside an option value: true/false -> on/off (what QEMU's boolean properties take;
-- the published maqet writes Python's True/False, which QEMU refuses), commas doubled.
local function scalar(value)
    if value == true then return "on" end
    if value == false then return "off" end
    return escape(value)
end

-- Appends the `key=value` parts of `map` to `parts`, nested mappings as dotted keys at any
-- depth ({file = {driver = "file"}} -> file.driver=file), a list as key.0=a,key.1=b (QEMU's
-- keyval list syntax), a null value as the bare key.
local function suboptions(map, prefix, parts)
    for _, k in ipairs(qemu.keys(map)) do
        local v, name = map[k], prefix .. k
        if v == null then
            parts[#parts + 1] = name
        elseif is_list(v) then
            for i, x in ipairs(v) do
                if type(x) == "table" then
                    suboptions(x, name .. "." .. (i - 1) .. ".", parts)
                else
                    parts[#parts + 1] = name .. "." .. (i - 1) .. "=" .. scalar(x)
                end
            end
        elseif type(v) == "table" then
            if next(v) == nil then parts[#parts + 1] = name .. "={}" else suboptions(v, name .. ".", parts) end
        else
            parts[#parts + 1] = name .. "=" .. scalar(v)
        end
    end
    return parts
end

--- The value of one QEMU option as QEMU gets it: a scalar as it is (`2G`, `q35`), a list joined
--- with commas (`[2, "sockets=1"]` → `2,sockets=1`; a mapping in it gives its key=value parts),
--- a mapping as key=value parts in order, nested mappings dotted at any depth. nil for
--- true/null/false (a bare flag or nothing; qemu.argument decides).
---@param v any
---@return string|nil
function qemu.option_value(v)
    if v == true or v == false or v == null or v == nil then return nil end
    if is_list(v) then
        local parts = {}
        for _, x in ipairs(v) do
            if type(x) == "table" then
                suboptions(x, "", parts)
            elseif x ~= null then
                parts[#parts + 1] = (x == true and "on") or (x == false and "off") or tostring(x)
            end
        end
        return table.concat(parts, ",")
    end
    if type(v) == "table" then return table.concat(suboptions(v, "", {}), ",") end
    return tostring(v)
end

local function flag(name)
    name = tostring(name)
    if name:sub(1, 1) == "-" then return name end
    return "-" .. name
end

--- The option an `arguments` mapping item is (its first key) and the value QEMU gets (nil for a
--- bare flag, false for "switched off"). A one-key item is `{option: value}`; an item with more
--- keys is the published maqet's multi-key form: the first key is the option and its value the
--- positional part, the other keys are key=value parts (`{display: none, show-cursor: "on"}` →
--- `-display none,show-cursor=on`).
---@param item table
---@return string option
---@return string|false|nil value
function qemu.option(item)
    local keys = qemu.keys(item)
    local option, first = keys[1], item[keys[1]]
    if #keys == 1 then
        if first == false then return option, false end
        return option, qemu.option_value(first)
    end
    local parts = {}
    local head = qemu.option_value(first)
    if head ~= nil and head ~= "" then parts[1] = head end
    local rest = {}
    for i = 2, #keys do rest[keys[i]] = item[keys[i]] end
    setmetatable(rest, { __keys = { table.unpack(keys, 2) } })
    suboptions(rest, "", parts)
    return option, table.concat(parts, ",")
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
    if type(item) ~= "table" or next(item) == nil then
        error(("arguments: an item must be a flag or a mapping, got %s"):format(type(item) == "table" and "{}" or type(item)), 0)
    end
    local option, value = qemu.option(item)
    if value == false then return {} end -- switched off
    if value == nil then return { flag(option) } end
    return { flag(option), value }
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
        -- The published maqet's order: file, if, format.
        local spec = ("file=%s,if=%s,format=%s"):format(escape(disk.file), escape(disk.interface or qemu.default_interface), kind)
        if disk.readonly then spec = spec .. ",readonly=on" end
        return { "-drive", spec }
    elseif kind == "virtfs" then
        local path = disk.path or disk.file
        if not path then
            error(("storage '%s': a virtfs share needs a 'path'"):format(disk.name or "?"), 0)
        end
        -- `options:` (the published maqet's form) wins over maqet's own top-level keys.
        local options = type(disk.options) == "table" and disk.options or {}
        local function pick(key, default)
            if options[key] ~= nil and options[key] ~= null then return options[key] end
            if disk[key] ~= nil and disk[key] ~= null then return disk[key] end
            return default
        end
        local name = disk.name or "share"
        local parts = {
            "local", "path=" .. escape(path), "mount_tag=" .. scalar(pick("mount_tag", name)),
            "security_model=" .. scalar(pick("security_model", qemu.default_security_model)),
            "id=" .. scalar(pick("id", name)),
        }
        if pick("readonly", false) == true then parts[#parts + 1] = "readonly=on" end
        local known = { mount_tag = true, security_model = true, id = true, readonly = true }
        local extra = {}
        for k, v in pairs(options) do
            if not known[k] then extra[k] = v end
        end
        suboptions(extra, "", parts)
        return { "-virtfs", table.concat(parts, ",") }
    end
    maqet.log.warn(("storage '%s': unknown type '%s' is ignored"):format(disk.name or "?", tostring(kind)))
    return {}
end

local function append(argv, words)
    for _, w in ipairs(words) do argv[#argv + 1] = w end
end

--- The `args` of a config: words given to QEMU as they are, each its own argv word (the published
--- maqet's verbatim list, `args: [-serial, none, -no-reboot]`), after the `arguments`.
---@param config table
---@return string[]
function qemu.verbatim(config)
    local out = {}
    if type(config.args) == "table" then
        for _, w in ipairs(config.args) do out[#out + 1] = tostring(w) end
    end
    return out
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
        append(argv, qemu.verbatim(config))
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
    local display_at = #argv + 1
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
    append(argv, qemu.verbatim(config))
    if config.display == nil then
        -- maqet's default `-display none` only when the arguments choose no display themselves.
        for i = display_at + 2, #argv do
            if argv[i] == "-display" or argv[i] == "-nographic" then
                table.remove(argv, display_at); table.remove(argv, display_at)
                break
            end
        end
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
