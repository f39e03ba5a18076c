-- scripts/lib/config.lua: what a VM definition is. Reading YAML files, merging them, validating
-- the result, and reading stored definitions back. Used by `maqet add`, `maqet apply` and every
-- workflow that needs a VM's config (`local config = require("maqet.lib.config")`).
--
-- Edit a copy in $XDG_CONFIG_HOME/maqet/scripts/lib/config.lua to change the rules (allow another
-- key, another storage type, other system directories). docs/configuration.md describes them.

---@class maqet.lib.config
local config = {}

--- Top-level keys maqet knows. Any other key is kept, with a warning naming it.
config.KNOWN_KEYS = {
    name = true, binary = true, memory = true, cpu = true, display = true, vga = true,
    arguments = true, storage = true, description = true, tags = true, serial = true,
    panic_device = true, on_panic = true, binary_is_qemu = true, allow_system_paths = true, args = true,
}

--- `arguments` options QEMU takes only once: when a later file gives one again, it replaces the
--- earlier one (in its place) instead of being added. The published maqet's "single-instance"
--- list, plus accel. `M` is machine.
config.SINGLE_OPTIONS = {
    machine = true, M = true, m = true, smp = true, cpu = true, accel = true, display = true, vga = true,
    kernel = true, initrd = true, append = true, bios = true, boot = true, name = true, uuid = true,
}
local OPTION_ALIASES = { M = "machine" }

--- What QEMU does when the guest panics (`on_panic:`, QEMU's `-action panic=`), and the default.
--- shutdown: QEMU powers off and exits (recorded crashed, reason guest-panic); pause: QEMU keeps
--- the guest paused for debugging (recorded paused, reason guest-panic; 'maqet stop' ends it);
--- exit-failure: QEMU exits with a failure code; none: the guest carries on by itself.
config.PANIC_ACTIONS = { shutdown = true, pause = true, ["exit-failure"] = true, none = true }

--- Keys a storage item may have.
config.STORAGE_KEYS = {
    name = true, type = true, file = true, size = true, interface = true, backing_file = true,
    path = true, mount_tag = true, security_model = true, readonly = true, options = true,
    backing_format = true,
}

--- Storage types: disk images (need `file`) and shared folders (need `path`).
config.STORAGE_TYPES = { qcow2 = "image", raw = "image", virtfs = "folder" }

--- QEMU binary used when a config names none (looked up in PATH).
config.DEFAULT_BINARY = "qemu-system-x86_64"

--- Storage may not be `/` itself, nor in these directories or below them.
config.SYSTEM_DIRECTORIES = {
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sbin",
    "/sys", "/usr",
}

--- Device files under /dev that hold no data: always allowed (`serial: file:/dev/null`,
--- `object: rng-random,id=rng0,filename=/dev/urandom`).
config.DATALESS_DEVICES = {
    ["/dev/null"] = true, ["/dev/zero"] = true, ["/dev/full"] = true, ["/dev/random"] = true, ["/dev/urandom"] = true,
}

--- `arguments` whose whole value is a host file QEMU opens (`kernel: /boot/vmlinuz` → `-kernel ...`).
config.PATH_ARGUMENTS = {
    kernel = true, initrd = true, bios = true, dtb = true, ["option-rom"] = true, pflash = true,
    hda = true, hdb = true, hdc = true, hdd = true, cdrom = true, fda = true, fdb = true,
    mtdblock = true, sd = true, D = true, pidfile = true, readconfig = true,
}

--- Keys inside an `arguments` value that name a host file (`drive: file=...`, `chardev:
--- file,path=...`, `blockdev: driver=file,filename=...`, `device: loader,file=...`); a dotted
--- key counts by its last part (`file.filename=`). A `json:{...}` value is looked into too.
config.PATH_OPTIONS = { file = true, filename = true, path = true, romfile = true, logfile = true }

--- `arguments` (and the `serial` key) whose value is a character device spec
--- (`file:PATH`, `pipe:PATH`, `unix:PATH,...`).
config.CHARDEV_ARGUMENTS = { serial = true, parallel = true, monitor = true, debugcon = true, qmp = true, ["qmp-pretty"] = true }

local null = maqet.json.null

-- ---------------------------------------------------------------------------------------------
-- Small helpers
-- ---------------------------------------------------------------------------------------------

local is_array = require("maqet.lib.qemu").is_list
config.is_array = is_array

---@param v any
---@return boolean
local function is_mapping(v)
    return type(v) == "table" and not is_array(v)
end
config.is_mapping = is_mapping

--- A deep copy; arrays stay marked as arrays (so `[]` stays `[]` in JSON).
---@generic T
---@param v T
---@return T
local function copy(v)
    if type(v) ~= "table" then return v end
    local out = {}
    for k, x in pairs(v) do out[k] = copy(x) end
    if is_array(v) then maqet.json.array(out) end
    return out
end
config.copy = copy

--- Lexically normalised absolute path: `dir/./a/../b` → `dir/b`; `~/x` → `$HOME/x`.
---@param path string
---@param base string directory a relative path is taken from
---@return string
function config.absolute(path, base)
    if path == "~" or path:sub(1, 2) == "~/" then
        path = (os.getenv("HOME") or "") .. path:sub(2)
    elseif path:sub(1, 1) ~= "/" then
        path = base .. "/" .. path
    end
    local parts = {}
    for part in path:gmatch("[^/]+") do
        if part == ".." then
            parts[#parts] = nil
        elseif part ~= "." then
            parts[#parts + 1] = part
        end
    end
    return "/" .. table.concat(parts, "/")
end

---@param path string
---@return string
local function directory_of(path)
    return path:match("^(.*)/[^/]*$") or "."
end

--- A value for messages: strings quoted, tables as JSON.
local function show(v)
    if type(v) == "string" then return ("'%s'"):format(v) end
    if type(v) == "table" then return maqet.json.encode(v) end
    if v == null then return "null" end
    return tostring(v)
end
config.show = show

-- ---------------------------------------------------------------------------------------------
-- Names, sizes, memory
-- ---------------------------------------------------------------------------------------------

--- Whether `name` can name a VM: `[A-Za-z0-9._-]`, 1 to 64 characters, not starting with `-` or `.`.
---@param name any
---@return boolean ok
---@return string? reason  why not, for a message
function config.name_ok(name)
    if type(name) ~= "string" then return false, "a VM name must be a string" end
    if #name == 0 then return false, "a VM name must not be empty" end
    if #name > 64 then return false, ("a VM name has at most 64 characters (this one has %d)"):format(#name) end
    if name:find("[^A-Za-z0-9._-]") then
        return false, ("VM name '%s' may only contain letters, digits, '.', '_' and '-'"):format(name)
    end
    if name:find("^[-.]") then return false, ("VM name '%s' must not start with '-' or '.'"):format(name) end
    return true
end

local UNITS = { [""] = 1, K = 1024, M = 1024 ^ 2, G = 1024 ^ 3, T = 1024 ^ 4, P = 1024 ^ 5 }

--- Bytes in a size: an integer (bytes) or `<number><K|M|G|T|P>` (binary units, `1.5G` allowed).
---@param v any
---@return integer|nil bytes
---@return string? reason
function config.size_bytes(v)
    if math.type(v) == "integer" then
        if v > 0 then return v end
        return nil, "must be greater than 0"
    end
    if type(v) ~= "string" then return nil, "must be a size like 16M or 20G" end
    local number, unit = v:match("^%s*(%d+%.?%d*)%s*([KkMmGgTtPp]?)%s*$")
    if not number then return nil, ("%s is not a size (write it like 512M, 20G or 1.5T)"):format(show(v)) end
    local bytes = math.floor(tonumber(number) * UNITS[unit:upper()])
    if bytes <= 0 then return nil, ("%s must be greater than 0"):format(show(v)) end
    return bytes
end

--- MiB of memory: an integer is MiB (like QEMU's `-m 512`), a string `512`, `512M`, `2G`, `1.5G`.
---@param v any
---@return number|nil mib
---@return string? reason
function config.memory_mib(v)
    local bytes, reason
    if math.type(v) == "integer" or (type(v) == "string" and v:match("^%s*%d+%.?%d*%s*$")) then
        bytes = tonumber(v) * UNITS.M
    else
        bytes, reason = config.size_bytes(v)
        if not bytes then
            return nil, ("%s is not an amount of memory (write it like 512M, 2G, or a number of MiB)"):format(show(v))
        end
    end
    if bytes < UNITS.M then return nil, ("%s is less than 1M"):format(show(v)) end
    return bytes / UNITS.M
end

-- ---------------------------------------------------------------------------------------------
-- Reading and merging files
-- ---------------------------------------------------------------------------------------------

--- Makes the paths in `cfg` absolute against `dir` (the directory of the file that names them):
--- `storage[].file`, `storage[].backing_file`, `storage[].path`, and `binary` when it has a `/`.
---@param cfg table
---@param dir string
function config.resolve_paths(cfg, dir)
    if type(cfg.binary) == "string" and cfg.binary:find("/", 1, true) then
        cfg.binary = config.absolute(cfg.binary, dir)
    end
    if is_array(cfg.arguments) then
        for i, item in ipairs(cfg.arguments) do cfg.arguments[i] = config.resolve_argument_paths(item, dir) end
    end
    if type(cfg.storage) == "table" then
        for _, item in ipairs(cfg.storage) do
            if type(item) == "table" then
                for _, key in ipairs({ "file", "backing_file", "path" }) do
                    if type(item[key]) == "string" and item[key] ~= "" then
                        item[key] = config.absolute(item[key], dir)
                    end
                end
            end
        end
    end
end

--- A normalised `arguments` item with its relative host paths made absolute against `dir`: the
--- whole value of a PATH_ARGUMENTS option (`cdrom: ./x.iso`), and the PATH_OPTIONS parts of a
--- value (`drive: file=disk.img,...`, `chardev: socket,path=s.sock`). A `~/` path is the home folder.
---@param item any
---@param dir string
---@return any
function config.resolve_argument_paths(item, dir)
    if not is_mapping(item) then return item end
    local key = next(item)
    local value = item[key]
    if type(value) ~= "string" or value == "" then return item end
    local function resolve(p)
        if p == "" or p:sub(1, 1) == "/" or p:sub(1, 5) == "json:" then return p end
        return config.absolute(p, dir)
    end
    if config.PATH_ARGUMENTS[key] then
        item[key] = resolve(value)
        return item
    end
    local parts = config.option_parts(value)
    local changed = false
    for i, part in ipairs(parts) do
        local k, v = part:match("^([^=]+)=(.*)$")
        if k and config.PATH_OPTIONS[k:match("([^.]*)$")] then
            local r = resolve(v)
            if r ~= v then parts[i] = k .. "=" .. r; changed = true end
        end
    end
    if changed then
        for i, part in ipairs(parts) do parts[i] = (part:gsub(",", ",,")) end
        item[key] = table.concat(parts, ",")
    end
    return item
end

--- Reads one YAML file into a table with its paths resolved. Raises `maqet.error` naming the file
--- ("not_found" when it cannot be read, "usage" when it is not a YAML mapping).
---@param path string
---@return table cfg
function config.load_file(path)
    path = config.absolute(path, maqet.fs.cwd())
    local cfg, message, code = maqet.yaml.load_file(path)
    if cfg == nil then
        message = message:gsub("^maqet%.yaml%.load_file ", "")
        if code == "EYAML" then
            maqet.error(("invalid YAML in %s"):format(message), "usage")
        elseif code == "EFBIG" then
            -- It exists and was read: too big is bad input, not "not found".
            maqet.error(("config file %s (split it, or name the right file)"):format(message), "usage")
        end
        maqet.error(("cannot read config file %s"):format(message), "not_found")
    end
    if cfg == null then cfg = {} end -- an empty file
    if type(cfg) ~= "table" or is_array(cfg) then
        maqet.error(("%s: a VM config must be a mapping of keys (binary:, memory:, ...), not %s"):format(
            path, type(cfg) == "table" and "a list" or show(cfg)), "usage")
    end
    setmetatable(cfg, nil)
    if is_array(cfg.arguments) then
        -- Here, and only here, the mappings still know their keys' order (maqet.yaml's __keys).
        for i, item in ipairs(cfg.arguments) do cfg.arguments[i] = config.normalize_argument(item) end
    end
    config.resolve_paths(cfg, directory_of(path))
    return cfg
end

--- One `arguments` item in the form maqet stores: a flag string, or a one-key mapping whose value
--- is a scalar, true/false/null, or the option's value as QEMU gets it. A multi-key item, a list
--- or a nested mapping becomes that string (lib/qemu.lua renders it, in the file's key order), so
--- the stored config (JSON, sorted keys) keeps what the order meant:
--- `{display: none, show-cursor: "on"}` → `{display: "none,show-cursor=on"}`.
---@param item any
---@return any
function config.normalize_argument(item)
    if not is_mapping(item) or next(item) == nil then return item end
    local qemu = require("maqet.lib.qemu")
    local keys = qemu.keys(item)
    if #keys == 1 and type(item[keys[1]]) ~= "table" then return setmetatable(item, nil) end
    local option, value = qemu.option(item)
    if value == nil then value = null end
    return { [option] = value }
end

--- The key an `arguments` item merges by: a flag string is its own key, a one-key mapping its key.
---@param item any
---@return string|nil
function config.argument_key(item)
    local key
    if type(item) == "string" then
        key = item:match("^%-*([^%s]+)")
    elseif is_mapping(item) and next(item) ~= nil then
        key = require("maqet.lib.qemu").keys(item)[1]:match("^%-*(.*)$")
    end
    if key == nil or key == "" then return nil end
    return OPTION_ALIASES[key] or key
end

--- The `id=` an `arguments` item names (`device: "virtio-net-pci,netdev=n0,id=nic0"`,
--- `{netdev: {type: user, id: n0}}`, "netdev user,id=n0"), or nil.
---@param item any
---@return string|nil
function config.argument_id(item)
    local value
    if type(item) == "string" then
        value = item:match("^%S+%s+(.*)$")
    elseif is_mapping(item) and next(item) ~= nil then
        value = item[require("maqet.lib.qemu").keys(item)[1]]
        if is_mapping(value) then
            if type(value.id) == "string" or math.type(value.id) == "integer" then return tostring(value.id) end
            return nil
        end
    end
    if type(value) ~= "string" then return nil end
    for _, part in ipairs(config.option_parts(value)) do
        local id = part:match("^id=(.*)$")
        if id then return id end
    end
    return nil
end

--- `over`'s arguments merged into `base`'s: every item is kept, in order, except an item that
--- names the same option and the same `id=` as an earlier one, or an option QEMU takes only once
--- (config.SINGLE_OPTIONS), or the same flag: that one replaces the earlier item in its place.
--- `replaced(key, id)` is called for each replacement that changes something.
---@param base any[]
---@param over any[]
---@param replaced? fun(key: string, id: string|nil)
---@return any[]
function config.merge_arguments(base, over, replaced)
    local out = maqet.json.array()
    for _, item in ipairs(base) do out[#out + 1] = copy(item) end
    for _, item in ipairs(over) do
        local key, id = config.argument_key(item), config.argument_id(item)
        local target
        if key ~= nil then
            for i, old in ipairs(out) do
                if config.argument_key(old) == key then
                    local old_id = config.argument_id(old)
                    if (id ~= nil and old_id == id) or (id == nil and config.SINGLE_OPTIONS[key])
                        or (type(item) == "string" and old == item) then
                        target = i
                        break
                    end
                end
            end
        end
        if target then
            if replaced and maqet.json.encode(out[target]) ~= maqet.json.encode(item) then replaced(key, id) end
            out[target] = copy(item)
        else
            out[#out + 1] = copy(item)
        end
    end
    return out
end

--- Merges a list of items by key: an item whose key is already there replaces it in place, new
--- keys are appended; `merge_item(old, new)` makes the replacement. Items without a key are appended.
local function merge_list(base, over, key_of, merge_item)
    local out, index = maqet.json.array(), {}
    for _, item in ipairs(base) do
        out[#out + 1] = copy(item)
        local key = key_of(item)
        if key ~= nil then index[key] = #out end
    end
    for _, item in ipairs(over) do
        local key = key_of(item)
        if key ~= nil and index[key] then
            out[index[key]] = merge_item(out[index[key]], item)
        else
            out[#out + 1] = copy(item)
            if key ~= nil then index[key] = #out end
        end
    end
    return out
end

local function storage_key(item)
    if is_mapping(item) and type(item.name) == "string" then return item.name end
    return nil
end

--- `over` merged into `base` (neither is changed): mappings merge deeply, other values from `over`
--- win, `null` removes a key, `storage` items merge by `name`, `arguments` by config.merge_arguments,
--- other lists (`args`, `tags`, `allow_system_paths`) are joined, as the published maqet does.
--- `replaced(what)` (optional) hears of each `arguments` item and storage item replaced.
---@param base table
---@param over table
---@param path? string  where in the config this is ("" at the top)
---@param replaced? fun(what: string)
---@return table
function config.merge(base, over, path, replaced)
    path = path or ""
    local out = copy(base)
    for key, value in pairs(over) do
        local old = out[key]
        if value == null then
            out[key] = nil
        elseif path == "" and key == "storage" and is_array(old) and is_array(value) then
            out[key] = merge_list(old, value, storage_key, function(a, b)
                if replaced then replaced(("storage '%s'"):format(tostring(storage_key(b)))) end
                if is_mapping(a) and is_mapping(b) then return config.merge(a, b, "storage.") end
                return copy(b)
            end)
        elseif path == "" and key == "arguments" and is_array(old) and is_array(value) then
            out[key] = config.merge_arguments(old, value, replaced and function(k, id)
                replaced(id and ("arguments %s id=%s"):format(k, id) or ("arguments %s"):format(k))
            end)
        elseif path == "" and is_array(old) and is_array(value) then
            local joined = copy(old)
            for _, x in ipairs(value) do joined[#joined + 1] = copy(x) end
            out[key] = joined
        elseif is_mapping(old) and is_mapping(value) then
            out[key] = config.merge(old, value, path .. key .. ".")
        else
            out[key] = copy(value)
        end
    end
    return out
end

--- Reads `paths` in order and merges them (later files win). Returns the merged config and
--- `origins`: which file last set each top-level key (`origins.memory`), storage item
--- (`origins["storage:hdd"]`) and argument (`origins["arguments:machine"]`), for messages.
---@param paths string[]
---@return table cfg
---@return table<string, string> origins
function config.load_files(paths)
    local merged, origins = {}, {}
    local set_by = {} -- "storage 'hdd'", "arguments device id=n0", "memory" → the file that set it
    for _, path in ipairs(paths) do
        local cfg = config.load_file(path)
        local absolute = config.absolute(path, maqet.fs.cwd())
        local function warn(what)
            maqet.log.warn(("%s: %s replaces the one from %s"):format(absolute, what, set_by[what] or "an earlier file"))
        end
        for key, value in pairs(cfg) do
            local old = merged[key]
            if old ~= nil and type(old) ~= "table" and type(value) ~= "table" and old ~= value then
                warn(key)
            end
        end
        merged = config.merge(merged, cfg, "", warn)
        for key in pairs(cfg) do
            origins[key] = absolute
            set_by[key] = absolute
        end
        for _, item in ipairs(type(cfg.storage) == "table" and cfg.storage or {}) do
            local name = storage_key(item)
            if name then
                origins["storage:" .. name] = absolute
                set_by[("storage '%s'"):format(name)] = absolute
            end
        end
        for _, item in ipairs(type(cfg.arguments) == "table" and cfg.arguments or {}) do
            local key = config.argument_key(item)
            if key then
                origins["arguments:" .. key] = absolute
                local id = config.argument_id(item)
                set_by[id and ("arguments %s id=%s"):format(key, id) or ("arguments %s"):format(key)] = absolute
            end
        end
    end
    return merged, origins
end

-- ---------------------------------------------------------------------------------------------
-- Validation
-- ---------------------------------------------------------------------------------------------

--- Raises the one-line usage error for `key`: "FILE: key: problem" (the file when known).
local function refuse(origins, origin_key, key, problem)
    local file = origins and origins[origin_key]
    local where = file and (file .. ": ") or ""
    maqet.error(("%s%s: %s"):format(where, key, problem), "usage")
end

--- Whether an absolute, resolved path is a system directory or inside one.
---@param path string
---@return string|nil directory  the system directory it is in
function config.system_directory(path)
    if path == "/" then return "/" end
    for _, dir in ipairs(config.SYSTEM_DIRECTORIES) do
        if path == dir or path:sub(1, #dir + 1) == dir .. "/" then return dir end
    end
    return nil
end

--- The binary a config runs: its `binary` (resolved through PATH when it has no `/`), else
--- `qemu-system-x86_64` from PATH. Returns nil and a reason when it is missing or not executable.
---@param cfg table
---@return string|nil path
---@return string? reason
function config.binary_path(cfg)
    local binary = cfg.binary or config.DEFAULT_BINARY
    if binary:find("/", 1, true) then
        local info = maqet.fs.stat(binary)
        if not info then return nil, ("%s does not exist"):format(binary) end
        if info.type ~= "file" then return nil, ("%s is a %s, not a program"):format(binary, info.type) end
        if not info.executable then return nil, ("%s is not executable (chmod +x it, or name another binary)"):format(binary) end
        return binary
    end
    local found = maqet.fs.which(binary)
    if not found then return nil, ("%s not found in PATH (install QEMU, or give its full path)"):format(binary) end
    return found
end

local function check_scalar_argument_value(v)
    local t = type(v)
    return t == "string" or t == "number" or t == "boolean" or v == null
end

local function validate_arguments(args, origins)
    if not is_array(args) and not (type(args) == "table" and next(args) == nil) then
        refuse(origins, "arguments", "arguments", "must be a list (- machine: q35, - no-reboot, ...)")
    end
    for i, item in ipairs(args) do
        local where = "arguments[" .. i .. "]"
        if type(item) == "string" then
            if item == "" then refuse(origins, "arguments", where, "an empty flag") end
        elseif not is_mapping(item) or next(item) == nil then
            refuse(origins, "arguments", where,
                ("%s must be a flag (no-reboot) or a mapping (machine: q35)"):format(show(item)))
        else
            -- A stored or adopted item may still be multi-key or nested (no key order left: lib/qemu.lua's fallback order).
            args[i] = config.normalize_argument(item)
        end
    end
end

--- `args`: a list of words QEMU gets verbatim (strings; numbers are written as they are).
local function validate_verbatim(list, origins)
    if not is_array(list) and not (type(list) == "table" and next(list) == nil) then
        refuse(origins, "args", "args", "must be a list of words (args: [-serial, none])")
    end
    for i, w in ipairs(list) do
        if type(w) == "number" then
            list[i] = tostring(w)
        elseif type(w) ~= "string" then
            refuse(origins, "args", "args[" .. i .. "]", ("%s must be a string (one argv word)"):format(show(w)))
        end
    end
    maqet.json.array(list)
end

--- Whether `real` (a resolved path) is one of `allowed` (resolved paths from
--- `allow_system_paths`) or below one.
local function allowed_path(real, allowed)
    for _, dir in ipairs(allowed or {}) do
        if real == dir or dir == "/" or real:sub(1, #dir + 1) == dir .. "/" then return true end
    end
    return false
end

--- The one check of a host file or folder a VM gets (storage entries and paths inside
--- `arguments` alike): not `/`, not in a system directory (symlinks and `..` resolved), unless
--- `allow_system_paths` lists it. Raises the usage error "WHERE: WHAT PATH is in the system
--- directory D; ...". `what` names the value in the message (`file`, `drive file=`).
---@param origins? table
---@param origin string origins key of the item
---@param where string the item, for the message (`storage 'hdd'`, `arguments[2]`)
---@param what string the value, for the message
---@param path any
---@param allowed? string[] resolved `allow_system_paths`
---@param advice? string what to do instead (default: keep disks and shared folders elsewhere)
function config.check_host_path(origins, origin, where, what, path, allowed, advice)
    if type(path) ~= "string" or path == "" then
        refuse(origins, origin, where, ("%s must be a path"):format(what))
    end
    local real = maqet.fs.realpath(path)
    local system = config.system_directory(real)
    if system and not config.DATALESS_DEVICES[real] and not allowed_path(real, allowed) then
        local shown = real == path and path or ("%s (%s)"):format(path, real)
        local sep = what:find("[=:]$") and "" or " "
        refuse(origins, origin, where, ("%s%s%s is in the system directory %s; %s, or list it in allow_system_paths"):format(
            what, sep, shown, system, advice or "keep disks and shared folders elsewhere"))
    end
end

local function check_storage_path(origins, origin, where, key, path, allowed)
    config.check_host_path(origins, origin, where, key, path, allowed)
end

--- The parts of a QEMU option value (`file=/a,,b,format=raw` → {"file=/a,b", "format=raw"}):
--- split at single commas, `,,` is a comma inside a part.
---@param value string
---@return string[]
function config.option_parts(value)
    local parts = {}
    local marked = value:gsub(",,", "\0")
    for part in (marked .. ","):gmatch("([^,]*),") do
        parts[#parts + 1] = (part:gsub("\0", ","))
    end
    return parts
end

--- Host paths named in a QEMU `json:{...}` filename: every string under a PATH_OPTIONS key.
local function json_paths(value, out)
    if type(value) ~= "table" then return out end
    for k, v in pairs(value) do
        if type(v) == "string" and config.PATH_OPTIONS[tostring(k):match("([^.]*)$")] then
            out[#out + 1] = { key = tostring(k) .. "=", path = v }
        elseif type(v) == "table" then
            json_paths(v, out)
        end
    end
    return out
end

--- The host paths one QEMU option names: `flag` without its dash and its `value` as QEMU gets
--- it. Returns a list of {key = "file" (the option key, or the flag itself), path = "..."}.
---@param flag string
---@param value string
---@return {key: string, path: string}[]
function config.option_paths(flag, value)
    local out = {}
    if config.PATH_ARGUMENTS[flag] then
        out[#out + 1] = { key = flag, path = value }
        return out
    end
    if config.CHARDEV_ARGUMENTS[flag] then
        local backend, rest = value:match("^(%a+):(.*)$")
        if backend == "file" or backend == "pipe" then
            out[#out + 1] = { key = flag .. " " .. backend .. ":", path = rest }
        elseif backend == "unix" then
            out[#out + 1] = { key = flag .. " unix:", path = config.option_parts(rest)[1] }
        end
    end
    for _, part in ipairs(config.option_parts(value)) do
        local key, v = part:match("^([^=]+)=(.*)$")
        if key and config.PATH_OPTIONS[key:match("([^.]*)$")] then
            if v:sub(1, 5) == "json:" then
                local decoded = maqet.json.decode(v:sub(6))
                if type(decoded) ~= "table" then
                    out[#out + 1] = { key = key .. "=json:", path = "", invalid = "is not a JSON object" }
                end
                for _, found in ipairs(json_paths(decoded, {})) do out[#out + 1] = found end
            elseif v ~= "" then
                out[#out + 1] = { key = key .. "=", path = v }
            end
        end
    end
    return out
end

--- Checks the host paths inside `arguments` items (and the `serial` key) like storage paths.
local function validate_argument_paths(cfg, origins, allowed)
    local qemu = require("maqet.lib.qemu")
    local advice = "keep the files a VM opens elsewhere"
    for i, item in ipairs(cfg.arguments or {}) do
        local key = config.argument_key(item)
        local words = qemu.argument(item)
        local j = 1
        while j <= #words do
            local flag = words[j]:match("^%-%-?(.+)$")
            local value = words[j + 1]
            if flag and value ~= nil and not value:match("^%-") then
                for _, found in ipairs(config.option_paths(flag, value)) do
                    local what = flag .. " " .. found.key
                    if found.key == flag then what = flag end
                    if found.invalid then
                        refuse(origins, "arguments:" .. tostring(key), "arguments[" .. i .. "]",
                            ("%s %s"):format(what, found.invalid))
                    end
                    config.check_host_path(origins, "arguments:" .. tostring(key), "arguments[" .. i .. "]",
                        what, found.path, allowed, advice)
                end
                j = j + 2
            else
                j = j + 1
            end
        end
    end
    local words = require("maqet.lib.qemu").verbatim(cfg)
    for j = 1, #words - 1 do
        local flag, value = words[j]:match("^%-%-?(.+)$"), words[j + 1]
        if flag and not value:match("^%-") then
            for _, found in ipairs(config.option_paths(flag, value)) do
                local what = found.key == flag and flag or (flag .. " " .. found.key)
                config.check_host_path(origins, "args", "args", what, found.path, allowed, advice)
            end
        end
    end
    if type(cfg.serial) == "string" then
        for _, found in ipairs(config.option_paths("serial", cfg.serial)) do
            if found.key ~= "serial" and found.key:find(":", 1, true) then
                config.check_host_path(origins, "serial", "serial", found.key:match("^serial (.*)$"), found.path, allowed, advice)
            end
        end
    end
end

--- `allow_system_paths` resolved (symlinks, `..`), after checking it is a list of absolute paths.
local function allowed_system_paths(cfg, origins)
    local list = cfg.allow_system_paths
    if list == nil then return {} end
    if not is_array(list) and not (type(list) == "table" and next(list) == nil) then
        refuse(origins, "allow_system_paths", "allow_system_paths", "must be a list of absolute paths (- /dev/sdb)")
    end
    local out = {}
    for _, path in ipairs(list) do
        if type(path) ~= "string" or path:sub(1, 1) ~= "/" then
            refuse(origins, "allow_system_paths", "allow_system_paths",
                ("%s is not an absolute path (write it from /)"):format(show(path)))
        end
        out[#out + 1] = maqet.fs.realpath(path)
    end
    maqet.json.array(list)
    return out
end

local function validate_storage(storage, origins, allowed)
    if not is_array(storage) and not (type(storage) == "table" and next(storage) == nil) then
        refuse(origins, "storage", "storage", "must be a list of items (- name: hdd ...)")
    end
    local seen = {}
    for i, item in ipairs(storage) do
        if not is_mapping(item) then
            refuse(origins, "storage", "storage[" .. i .. "]", "must be a mapping (name:, type:, file:, ...)")
        end
        if type(item.name) ~= "string" or item.name == "" then
            refuse(origins, "storage", "storage[" .. i .. "]", "name is required (each storage item needs a unique name)")
        end
        local origin = "storage:" .. item.name
        local where = ("storage '%s'"):format(item.name)
        if seen[item.name] then refuse(origins, origin, where, "the name is used twice") end
        seen[item.name] = true
        local kind = config.STORAGE_TYPES[item.type]
        if not kind then
            local types = {}
            for t in pairs(config.STORAGE_TYPES) do types[#types + 1] = t end
            table.sort(types)
            refuse(origins, origin, where, ("type %s is not one of %s"):format(
                item.type == nil and "(missing)" or show(item.type), table.concat(types, ", ")))
        end
        if kind == "image" then
            if item.file == nil then
                -- config.scratch_files names it in the data directory when the VM is stored.
                if item.size == nil and item.backing_file == nil then
                    refuse(origins, origin, where, "needs a file, or a size to make a new image with (size: 10G)")
                end
            else
                check_storage_path(origins, origin, where, "file", item.file, allowed)
            end
            if item.backing_file ~= nil then
                if item.type ~= "qcow2" then refuse(origins, origin, where, "backing_file needs type qcow2") end
                check_storage_path(origins, origin, where, "backing_file", item.backing_file, allowed)
            end
            if item.size ~= nil then
                local _, reason = config.size_bytes(item.size)
                if reason then refuse(origins, origin, where, "size " .. reason) end
            end
        else
            check_storage_path(origins, origin, where, "path", item.path, allowed)
            local options = item.options
            if options ~= nil and not is_mapping(options) and not (type(options) == "table" and next(options) == nil) then
                refuse(origins, origin, where, "options must be a mapping (mount_tag:, security_model:, readonly:, ...)")
            end
            for _, src in ipairs({ item, options or {} }) do
                for _, key in ipairs({ "mount_tag", "security_model", "id" }) do
                    if src[key] ~= nil and type(src[key]) ~= "string" then
                        refuse(origins, origin, where, key .. " must be a string")
                    end
                end
                if src.readonly ~= nil and type(src.readonly) ~= "boolean" then
                    refuse(origins, origin, where, ("readonly must be true or false, not %s"):format(show(src.readonly)))
                end
            end
        end
        if item.interface ~= nil and type(item.interface) ~= "string" then
            refuse(origins, origin, where, "interface must be a string (virtio, ide, scsi, ...)")
        end
    end
end

--- Storage keys each kind of item does not use (kept, with a warning).
config.IGNORED_STORAGE_KEYS = {
    image = { path = true, mount_tag = true, security_model = true, options = true },
    folder = { size = true, interface = true, backing_file = true, backing_format = true },
}

--- The keys of `cfg` maqet keeps but does not use, for warnings: unknown top-level keys, unknown
--- storage keys, and storage keys its type ignores (`size` of a virtfs share). Each is
--- {origin = the origins key ("colour", "storage:hdd"), text = "unknown key 'colour' (…)"}.
--- Never raises: used by add/apply (config.validate) and by start for a config maqet never
--- checked (config.unchecked).
---@param cfg table
---@return {origin: string, text: string}[]
function config.unused_keys(cfg)
    local out = {}
    if type(cfg) ~= "table" then return out end
    local keys = {}
    for key in pairs(cfg) do keys[#keys + 1] = tostring(key) end
    table.sort(keys)
    for _, key in ipairs(keys) do
        if not config.KNOWN_KEYS[key] then
            out[#out + 1] = { origin = key, text = ("unknown key '%s' (kept, but maqet does not use it; known keys: %s)"):format(key,
                "name, binary, binary_is_qemu, memory, cpu, display, vga, arguments, args, storage, serial, description, tags, "
                .. "panic_device, on_panic, allow_system_paths") }
        end
    end
    for i, item in ipairs(is_array(cfg.storage) and cfg.storage or {}) do
        if is_mapping(item) then
            local name = type(item.name) == "string" and item.name or ("#" .. i)
            local kind = config.STORAGE_TYPES[item.type]
            local item_keys = {}
            for key in pairs(item) do item_keys[#item_keys + 1] = tostring(key) end
            table.sort(item_keys)
            for _, key in ipairs(item_keys) do
                local text
                if not config.STORAGE_KEYS[key] then
                    text = ("storage '%s': unknown key '%s' (kept, but maqet does not use it)"):format(name, key)
                elseif kind and config.IGNORED_STORAGE_KEYS[kind][key] then
                    text = ("storage '%s': key '%s' is ignored for type %s (kept, but maqet does not use it)"):format(name, key, item.type)
                end
                if text then out[#out + 1] = { origin = "storage:" .. name, text = text } end
            end
        end
    end
    return out
end

--- Whether a row's config_data was never checked by maqet: maqet stores only its own encoding
--- (config.encode: sorted keys, no spaces), so any other text (the published maqet's json.dumps,
--- a hand-written row) was adopted as it was.
---@param row table a vm_instances row
---@return boolean
function config.unchecked(row)
    local text = row.config_data
    if type(text) ~= "string" or text == "" or text == "{}" then return false end
    local decoded = maqet.json.decode(text)
    if type(decoded) ~= "table" then return true end
    return config.encode(setmetatable(decoded, nil)) ~= text
end

--- Checks a merged config. Returns a normalised copy (lists marked as arrays; `cpu: "2"` → 2) or
--- raises `maqet.error(..., "usage")` with one line naming the key (and the file, from
--- `origins`, when known). Unknown top-level keys are kept and logged as warnings.
---@param cfg table
---@param origins? table<string, string>  from config.load_files
---@return table cfg
function config.validate(cfg, origins)
    if not is_mapping(cfg) and next(cfg) ~= nil then
        maqet.error("a VM config must be a mapping of keys (binary:, memory:, ...)", "usage")
    end
    local out = copy(cfg)
    setmetatable(out, nil)
    local keys = {}
    for key in pairs(out) do keys[#keys + 1] = tostring(key) end
    table.sort(keys)
    -- With `origins`, only keys that came from the files or flags warn (not ones already stored).
    for _, unused in ipairs(config.unused_keys(out)) do
        if origins == nil or origins[unused.origin] ~= nil then
            local file = origins and origins[unused.origin]
            maqet.log.warn((file and (file .. ": ") or "") .. unused.text)
        end
    end

    -- Everything must be storable as JSON: no .inf or .nan anywhere.
    local function finite(v, where)
        if math.type(v) == "float" and (v ~= v or v == math.huge or v == -math.huge) then
            refuse(origins, where:match("^[^.%[]+"), where, "infinity and NaN cannot be stored (quote the value)")
        elseif type(v) == "table" then
            for k, x in pairs(v) do finite(x, where .. (math.type(k) == "integer" and ("[" .. k .. "]") or ("." .. k))) end
        end
    end
    for _, key in ipairs(keys) do finite(out[key], key) end

    if out.name ~= nil then
        local ok, reason = config.name_ok(out.name)
        if not ok then refuse(origins, "name", "name", reason) end
    end
    if out.binary ~= nil and (type(out.binary) ~= "string" or out.binary == "") then
        refuse(origins, "binary", "binary", "must be a program name or path")
    end
    if out.binary_is_qemu ~= nil and type(out.binary_is_qemu) ~= "boolean" then
        refuse(origins, "binary_is_qemu", "binary_is_qemu", ("must be true or false, not %s"):format(show(out.binary_is_qemu)))
    end
    local program, reason = config.binary_path(out)
    if reason then refuse(origins, "binary", "binary", reason) end
    local problem = require("maqet.lib.qemu").binary_problem(out, program, true)
    if problem then refuse(origins, out.binary ~= nil and "binary" or "binary_is_qemu", "binary", problem) end
    local allowed = allowed_system_paths(out, origins)

    if out.memory ~= nil then
        local _, why = config.memory_mib(out.memory)
        if why then refuse(origins, "memory", "memory", why) end
    end
    if out.cpu ~= nil then
        local cpu = out.cpu
        if type(cpu) == "string" and cpu:match("^%d+$") then cpu = math.tointeger(tonumber(cpu)) end
        if math.type(cpu) ~= "integer" or cpu < 1 then
            refuse(origins, "cpu", "cpu", ("%s is not a positive whole number of CPUs"):format(show(out.cpu)))
        end
        out.cpu = cpu
    end
    for _, key in ipairs({ "display", "vga", "description" }) do
        if out[key] ~= nil and type(out[key]) ~= "string" then
            refuse(origins, key, key, ("must be a string, not %s"):format(show(out[key])))
        end
    end
    if out.panic_device ~= nil and type(out.panic_device) ~= "boolean" then
        refuse(origins, "panic_device", "panic_device", ("must be true or false, not %s"):format(show(out.panic_device)))
    end
    if out.on_panic ~= nil and not config.PANIC_ACTIONS[out.on_panic] then
        refuse(origins, "on_panic", "on_panic", ("%s is not one of shutdown, pause, exit-failure, none"):format(show(out.on_panic)))
    end
    if out.tags ~= nil then
        if not is_array(out.tags) and not (type(out.tags) == "table" and next(out.tags) == nil) then
            refuse(origins, "tags", "tags", "must be a list of strings")
        end
        for _, tag in ipairs(out.tags) do
            if type(tag) ~= "string" then refuse(origins, "tags", "tags", ("%s is not a string"):format(show(tag))) end
        end
        maqet.json.array(out.tags)
    end
    if out.arguments ~= nil then
        validate_arguments(out.arguments, origins)
        maqet.json.array(out.arguments)
    end
    if out.args ~= nil then validate_verbatim(out.args, origins) end
    validate_argument_paths(out, origins, allowed)
    if out.storage ~= nil then
        validate_storage(out.storage, origins, allowed)
        maqet.json.array(out.storage)
    end
    return out
end

--- Gives each qcow2/raw storage item without a `file` one: `<data dir>/disks/<VM id>-<item
--- name>.<type>` (the published maqet uses /tmp/maqet-<id>-<name>.<type>, which a reboot may
--- empty). `maqet start` creates it (lib/storage.lua) and records it, so `rm --delete-storage`
--- deletes it. Called by add and apply on a validated config; changes `cfg` in place.
---@param cfg table
---@param id string the VM's id
---@return string[] named  the files named
function config.scratch_files(cfg, id)
    local named = {}
    for _, item in ipairs(type(cfg.storage) == "table" and cfg.storage or {}) do
        if config.STORAGE_TYPES[item.type] == "image" and item.file == nil then
            local stem = (tostring(item.name):gsub("[^%w._-]", "_"))
            item.file = ("%s/disks/%s-%s.%s"):format(maqet.data_dir(), id, stem, item.type)
            named[#named + 1] = item.file
        end
    end
    return named
end

-- ---------------------------------------------------------------------------------------------
-- Identities
-- ---------------------------------------------------------------------------------------------

--- `n` random bytes (from /dev/urandom; math.random when it cannot be read).
local function random_bytes(n)
    local f = io.open("/dev/urandom", "rb")
    local bytes = f and f:read(n)
    if f then f:close() end
    if bytes and #bytes == n then return { bytes:byte(1, n) } end
    local out = {}
    for i = 1, n do out[i] = math.random(0, 255) end
    return out
end

--- A random UUID (version 4), lowercase: "6867403f-efdd-4f05-8f75-192b516aec1e".
---@return string
function config.new_id()
    local b = random_bytes(16)
    b[7] = (b[7] & 0x0f) | 0x40 -- version 4
    b[9] = (b[9] & 0x3f) | 0x80 -- RFC 4122 variant
    local hex = {}
    for i = 1, 16 do hex[i] = ("%02x"):format(b[i]) end
    local s = table.concat(hex)
    return ("%s-%s-%s-%s-%s"):format(s:sub(1, 8), s:sub(9, 12), s:sub(13, 16), s:sub(17, 20), s:sub(21, 32))
end

--- "vm-" and 8 hex digits, not used by another VM in `db`.
---@param db maqet.Database
---@return string
function config.generated_name(db)
    for _ = 1, 100 do
        local b = random_bytes(4)
        local name = ("vm-%02x%02x%02x%02x"):format(b[1], b[2], b[3], b[4])
        if not db:scalar("SELECT 1 FROM vm_instances WHERE name = ?", name) then return name end
    end
    maqet.error("could not generate an unused VM name; give one with --name")
end

-- ---------------------------------------------------------------------------------------------
-- Stored definitions
-- ---------------------------------------------------------------------------------------------

--- A stored `config_data` text as a table (`{}` for empty or invalid text).
---@param text string|nil
---@return table
function config.decode(text)
    if type(text) ~= "string" or text == "" then return {} end
    local cfg = maqet.json.decode(text)
    if type(cfg) ~= "table" then return {} end
    return setmetatable(cfg, nil)
end

--- The row of VM `name` and its config as a table, or nil when there is none.
---@param db maqet.Database
---@param name string
---@return table|nil row   every column of vm_instances
---@return table? cfg      row.config_data decoded
function config.stored(db, name)
    local rows = assert(db:query("SELECT * FROM vm_instances WHERE name = ?", name))
    local row = rows[1]
    if not row then return nil end
    return row, config.decode(row.config_data)
end

--- The config as stored in `config_data`: JSON with sorted keys, without `name` (the row's
--- `name` column is the VM's name).
---@param cfg table
---@return string
function config.encode(cfg)
    local stored = copy(cfg)
    stored.name = nil
    return maqet.json.encode(stored)
end

return config
