-- maqet.vm.wait: wait for a VM to reach a state, or for its console to print something.
-- `maqet wait` (scripts/lifecycle/wait.lua) is a thin wrapper around it.
--
-- States (the truthful status, vm.reconcile, polled every wait.poll_ms):
--   running  the row says running and QEMU is alive
--   paused   the row says paused
--   stopped  the VM is not active: stopped, crashed, or never started (nothing is left to stop)
--   crashed  the row says crashed
-- Console: the console log is searched from where the VM's current boot began (lib/console.lua),
-- so `maqet start g && maqet wait g --console 'login:'` cannot miss a prompt printed before the
-- wait began. On a VM that is not running the last boot's output is searched once.

local vm = require("maqet.lib.vm")
local console = require("maqet.lib.console")

local wait = {}

wait.poll_ms = 100
wait.STATES = { "running", "paused", "stopped", "crashed" }

local active = console.active

local reached = {
    running = function(row) return row.status == "running" and row.alive end,
    paused = function(row) return row.status == "paused" end,
    stopped = function(row) return not active(row.status) end,
    crashed = function(row) return row.status == "crashed" end,
}

local function current(name)
    local row = assert(maqet.db:query("SELECT * FROM vm_instances WHERE name = ?", name))[1]
    if not row then return nil end
    row = vm.reconcile(row)
    row.process = nil
    return row
end

--- Waits for VM `name`. opts: state ("running"|"paused"|"stopped"|"crashed") or console (a
--- pattern: POSIX ERE unless syntax = "lua"|"plain"), timeout_ms (nil: no limit), from (console:
--- an offset instead of the current boot's start).
--- Returns {name, status, match?, offset?} or nil, message, code (ENOVM, ETIMEDOUT, EINVAL,
--- ENOCONSOLE, ESTOPPED: the VM stopped before its console printed the pattern).
---@param name string
---@param opts table
function wait.wait(name, opts)
    if type(name) ~= "string" or name == "" then error("maqet.vm.wait: name must be a non-empty string", 2) end
    if type(opts) ~= "table" or (opts.state == nil) == (opts.console == nil) then
        error("maqet.vm.wait: opts must give either state or console", 2)
    end
    local found, missing, missing_code = vm.resolve(name)
    if not found then return nil, missing, missing_code end
    name = found.name
    local deadline = opts.timeout_ms and (maqet.now() + opts.timeout_ms / 1000) or nil
    local after_s = opts.timeout_ms and ("%g s"):format(opts.timeout_ms / 1000) or nil

    if opts.state ~= nil then
        local test = reached[opts.state]
        if not test then
            return nil, ("unknown state '%s' (use %s)"):format(tostring(opts.state), table.concat(wait.STATES, ", ")), "EINVAL"
        end
        while true do
            local row = current(name)
            if not row then return nil, ("no VM named '%s' (see 'maqet ls')"):format(name), "ENOVM" end
            if test(row) then return { name = name, status = row.status } end
            if deadline and maqet.now() >= deadline then
                return nil, ("VM '%s' is still %s after %s (waiting for %s)"):format(name, row.status, after_s, opts.state), "ETIMEDOUT"
            end
            maqet.sleep(wait.poll_ms)
        end
    end

    local c, err, code = console.open(name)
    if not c then return nil, err, code end
    local find, bad = console.matcher(opts.console, opts.syntax)
    if not find then return nil, bad, "EINVAL" end
    local from = opts.from or c:boot_offset()
    local function live()
        local row = current(name)
        return row ~= nil and row.id == c.id and active(row.status)
    end
    local text, after, start = console.search(c.paths.console_log, from, find, deadline, live)
    if text then
        local row = current(name)
        return { name = name, status = row and row.status, match = text, offset = after, start = start }
    end
    local why, read = after, start
    local seen = (#read > 0) and ("; the last output was: " .. console.tail(read)) or "; it printed nothing"
    if why == "gone" then
        local row = current(name)
        return nil, ("VM '%s' is not running (status %s) and its console did not print /%s/ in its last boot%s"):format(
            name, row and row.status or "gone", opts.console, seen), "ESTOPPED"
    end
    return nil, ("VM '%s': the console did not print /%s/ within %s%s"):format(name, opts.console, after_s, seen), "ETIMEDOUT"
end

return wait
