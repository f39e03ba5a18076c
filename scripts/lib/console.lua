-- maqet.vm.console: a VM's serial console for scripts, and the console log's upkeep.
--
-- Every VM without a serial line of its own (lib/qemu.lua, qemu.own_serial) has its serial port on
-- a chardev socket, console.sock in its runtime directory, and QEMU appends everything the guest
-- prints to <data dir>/logs/<name>.console.log. That log is an append-only byte stream with
-- absolute offsets:
--
--   local c = assert(maqet.vm.console("g"))
--   local _, after = assert(c:expect("guest# "))            -- since the current boot began
--   assert(c:send("echo hello-$((6*7))\n"))
--   assert(c:expect("hello-42", { from = after, timeout_ms = 10000 }))
--
-- Each expect reads from its own `from`, so no wait consumes text another one needs; matching is
-- on bytes (a prompt without a newline matches). Patterns are POSIX extended regular expressions
-- (maqet.regex, like `maqet wait --console`), or Lua patterns / plain text with `syntax`.
--
-- The log is rotated (to .1) when a start finds it over console.max_log_bytes, before QEMU starts;
-- a single boot that prints more than that makes the log grow past the cap until the next start.
-- Where the current (or last) boot's output begins is kept in <name>.console.offset beside it.

local qemu = require("maqet.lib.qemu")
local files = require("maqet.lib.files")

local console = {}

console.max_log_bytes = 8 * 1024 * 1024
console.poll_ms = 50
console.send_timeout_ms = 5000
console.default_timeout_ms = 30000

--- Whether a VM in status `s` has (or is about to have) a QEMU, so its console may still print:
--- lib/status.lua's active statuses.
---@param s string
---@return boolean
function console.active(s)
    return require("maqet.lib.status").is_active(s)
end

local function size_of(path)
    return files.size(path) or 0
end

local function row_by_name(name)
    return assert(maqet.db:query("SELECT * FROM vm_instances WHERE name = ?", name))[1]
end

local function dirname(path)
    return path:match("^(.*)/[^/]*$") or "."
end

--- Before a start (lib/vm.lua calls it once the row is claimed): rotates the console log when it
--- is over the cap and records where this boot's output will begin. Returns that offset, or nil
--- for a VM with its own serial line.
---@param row table a vm_instances row
---@param config? table its decoded config
---@return integer?
function console.prepare(row, config)
    config = config or qemu.config(row)
    if qemu.own_serial(config) then return nil end
    local paths = qemu.paths(row)
    local logs = dirname(paths.console_log)
    if not maqet.fs.stat(logs) then
        local result, err = maqet.process.run({ "mkdir", "-p", "--", logs })
        if not result or result.code ~= 0 then
            error(("cannot create %s: %s"):format(logs, result and result.stderr or err), 0)
        end
    end
    -- maqet.history.rotate: the one rotation of the VM logs (the events log's too), our cap.
    local rotated, err = maqet.history.rotate(paths.console_log, console.max_log_bytes)
    if rotated == nil then
        maqet.log.warn(("%s: could not rotate the console log: %s"):format(row.name, tostring(err)))
    end
    local size = size_of(paths.console_log)
    local f, err = io.open(paths.console_offset, "wb")
    if not f then error(("cannot write %s: %s"):format(paths.console_offset, tostring(err)), 0) end
    f:write(tostring(size), "\n")
    f:close()
    return size
end

--- Where the VM's current boot (or, when it is stopped, its last boot) began in its console log.
---@param row table
---@return integer
function console.boot_offset(row)
    return tonumber((files.read(qemu.paths(row).console_offset) or ""):match("%d+")) or 0
end

-- Matchers: find(buffer) -> start, end (1-based, inclusive).
local function matcher(pattern, syntax)
    syntax = syntax or "ere"
    if syntax == "ere" then
        local re, err = maqet.regex.compile(pattern)
        if not re then return nil, err end
        return function(buffer) return re:find(buffer) end
    elseif syntax == "lua" then
        local ok, err = pcall(string.find, "", pattern)
        if not ok then return nil, ("invalid Lua pattern '%s': %s"):format(pattern, err) end
        return function(buffer) return buffer:find(pattern) end
    elseif syntax == "plain" then
        return function(buffer) return buffer:find(pattern, 1, true) end
    end
    error(("console: syntax must be \"ere\", \"lua\" or \"plain\", got %s"):format(tostring(syntax)), 3)
end
console.matcher = matcher

--- `text` with control bytes made visible (\r, \n, \xNN), for messages.
function console.visible(text)
    return (text:gsub("[%c\128-\255]", function(c)
        if c == "\r" then return "\\r" elseif c == "\n" then return "\\n" elseif c == "\t" then return "\\t" end
        return ("\\x%02x"):format(c:byte())
    end))
end

--- The last `n` bytes of `text`, made visible.
function console.tail(text, n)
    n = n or 160
    if #text > n then return "…" .. console.visible(text:sub(-n)) end
    return console.visible(text)
end

--- Polls the log at `path` from byte `from` until `find` matches, the deadline passes, or
--- `live()` says the VM is gone (then once more, for what QEMU wrote last).
--- Returns match, offset after it, offset of its start; or nil, "timeout"|"gone", what was read.
function console.search(path, from, find, deadline, live)
    local base, buffer = from, ""
    local polls, last = 0, false
    while true do
        local text, size = files.read_range(path, base + #buffer)
        if text and size < base + #buffer then
            -- The log was rotated (a new start): this boot's output is the new file.
            base, buffer = 0, ""
            text = files.read_range(path, 0)
        end
        if text then buffer = buffer .. text end
        local s, e = find(buffer)
        if s then return buffer:sub(s, e), base + e, base + s - 1 end
        if last then return nil, "gone", buffer end
        if deadline and maqet.now() >= deadline then return nil, "timeout", buffer end
        polls = polls + 1
        if live and polls % 10 == 1 and not live() then
            last = true
        else
            maqet.sleep(console.poll_ms)
        end
    end
end

-- The handle -----------------------------------------------------------------------------------

---@class maqet.lib.Console
local Console = {}
Console.__index = Console

--- The console of VM `name`: nil, message, "ENOVM" when there is no such VM, nil, message,
--- "ENOCONSOLE" when its config has its own serial line.
---@param name string
function console.open(name)
    if type(name) ~= "string" or name == "" then
        error("maqet.vm.console: name must be a non-empty string", 2)
    end
    local row, missing, missing_code = require("maqet.lib.vm").resolve(name)
    if not row then return nil, missing, missing_code end
    name = row.name
    local own = qemu.own_serial(qemu.config(row))
    if own then
        return nil, ("VM '%s' has its own serial line (%s); maqet's console is not connected to it (read the guest where that line goes, or take it out of the config with 'maqet apply %s' to use maqet's console)"):format(
            name, own, name), "ENOCONSOLE"
    end
    return setmetatable({ name = name, id = row.id, row = row, paths = qemu.paths(row) }, Console)
end

--- Whether the VM's row still says its QEMU is (or will be) there.
function Console:live()
    local row = maqet.db:query("SELECT status FROM vm_instances WHERE id = ?", self.id)
    return row ~= nil and row[1] ~= nil and console.active(row[1].status)
end

--- The current end of the console log (an absolute offset).
---@return integer
function Console:mark()
    return size_of(self.paths.console_log)
end

--- Where the VM's current boot began in the log.
---@return integer
function Console:boot_offset()
    return console.boot_offset(self.row)
end

--- The log's bytes from offset `from` (default: the current boot's start) to `to` (default: the end).
---@param from? integer
---@param to? integer
---@return string
function Console:read(from, to)
    return (files.read_range(self.paths.console_log, from or self:boot_offset(), to)) or ""
end

--- Waits until the console prints `pattern` at or after `opts.from` (default: where the current
--- boot began). opts: from, timeout_ms (default 30000), syntax = "ere" (default) | "lua" | "plain".
--- Returns the matched text, the offset after it and the offset where it starts; or nil, message,
--- "ETIMEDOUT" (quoting the pattern and the tail it saw) or "ESTOPPED" (the VM is gone).
---@param pattern string
---@param opts? {from: integer?, timeout_ms: integer?, syntax: string?}
function Console:expect(pattern, opts)
    if type(pattern) ~= "string" then error("console:expect: pattern must be a string", 2) end
    opts = opts or {}
    local find, err = matcher(pattern, opts.syntax)
    if not find then error("console:expect: " .. err, 2) end
    local from = opts.from or self:boot_offset()
    local timeout_ms = opts.timeout_ms or console.default_timeout_ms
    local deadline = maqet.now() + timeout_ms / 1000
    local text, after, start = console.search(self.paths.console_log, from, find, deadline, function() return self:live() end)
    if text then return text, after, start end
    local why, read = after, start
    local seen = (#read > 0) and ("; the last output was: " .. console.tail(read)) or "; nothing was printed"
    if why == "gone" then
        return nil, ("VM '%s' is not running, and its console did not print /%s/ after offset %d%s"):format(
            self.name, pattern, from, seen), "ESTOPPED"
    end
    return nil, ("VM '%s': the console did not print /%s/ within %g s after offset %d%s"):format(
        self.name, pattern, timeout_ms / 1000, from, seen), "ETIMEDOUT"
end

--- Types `text` into the guest (through console.sock). nil, message, "EBUSY" while someone is
--- attached with `maqet console`; "ENOTRUNNING" when the VM's console socket is not there.
---@param text string
function Console:send(text)
    if type(text) ~= "string" then error("console:send: text must be a string", 2) end
    local ok, err, code = maqet.console.send(self.paths.console_sock, text,
        { lock = self.paths.console_lock, timeout_ms = console.send_timeout_ms })
    if ok then return true end
    if code == "ENOENT" or code == "ECONNREFUSED" then
        return nil, ("VM '%s' is not running (its console socket %s is not there)"):format(self.name, self.paths.console_sock), "ENOTRUNNING"
    elseif code == "EBUSY" then
        return nil, ("VM '%s': %s; detach it (Ctrl-]) and try again"):format(self.name, err), code
    end
    return nil, ("VM '%s': console: %s"):format(self.name, err), code
end

--- Who is attached with `maqet console` (their pid), or nil.
---@return integer?
function Console:attached()
    return maqet.console.holder(self.paths.console_lock)
end

--- Nothing to release (the handle holds no descriptor); for `<close>`.
function Console:close() end
Console.__close = Console.close

return console
