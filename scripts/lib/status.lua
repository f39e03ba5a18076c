-- scripts/lib/status.lua: the statuses of a VM (vm_instances.status) and their transitions, in
-- one place. vm.lua, reconcile, `maqet ls`, the lifecycle workflows and the per-VM runner's hooks
-- (lifecycle/runner.lua) all ask this file; nothing else lists statuses.
--
--   created   defined, never started            stopped   QEMU ended as asked (or cleanly)
--   starting  a start is in progress            crashed   QEMU ended otherwise, or the guest panicked
--   running   QEMU runs the guest               paused    QEMU runs, the guest is stopped (STOP event)
--   stopping  a stop is in progress
--
-- "Active" statuses are those where a QEMU (or a start that will make one) may exist: rows in them
-- are checked against the real processes (vm.reconcile) and refuse a second start.

---@class maqet.lib.status
local status = {}

--- Every status, in the order a VM meets them.
status.ALL = { "created", "starting", "running", "paused", "stopping", "stopped", "crashed" }

--- Statuses in which a QEMU may exist.
status.ACTIVE = { starting = true, running = true, paused = true, stopping = true }

--- Statuses in which QEMU runs and answers on its monitors (QMP commands make sense).
status.HAS_QEMU = { running = true, paused = true, stopping = true }

--- Allowed transitions: TRANSITIONS[from][to]. A failed start goes back to where it came from
--- (vm.start's release), which is not listed: it undoes the claim rather than moving on.
status.TRANSITIONS = {
    created = { starting = true },
    starting = { running = true, paused = true, stopped = true, crashed = true },
    running = { paused = true, stopping = true, stopped = true, crashed = true },
    paused = { running = true, stopping = true, stopped = true, crashed = true },
    stopping = { stopped = true, crashed = true },
    stopped = { starting = true },
    crashed = { starting = true },
}

local known = {}
for _, s in ipairs(status.ALL) do known[s] = true end

--- Whether `s` is a status maqet knows.
function status.known(s) return known[s] == true end

--- Whether a row in status `s` may have a QEMU (or a start in progress).
function status.is_active(s) return status.ACTIVE[s] == true end

--- Whether QEMU answers QMP for a row in status `s`.
function status.has_qemu(s) return status.HAS_QEMU[s] == true end

--- Whether a row may go from `from` to `to`.
function status.can(from, to)
    local next = status.TRANSITIONS[from]
    return next ~= nil and next[to] == true
end

--- The statuses that may move to `to`, as a sorted list (for `status IN (…)` compare-and-set).
function status.from_states(to)
    local list = {}
    for _, s in ipairs(status.ALL) do
        if status.can(s, to) then list[#list + 1] = s end
    end
    return list
end

--- The active statuses as a sorted list (`maqet ls` asks for it before deciding to reconcile).
function status.active_list()
    local list = {}
    for _, s in ipairs(status.ALL) do
        if status.ACTIVE[s] then list[#list + 1] = s end
    end
    table.sort(list)
    return list
end

--- `('a', 'b')`: a list of statuses as an SQL value list (statuses are plain words).
function status.sql_list(list)
    local quoted = {}
    for i, s in ipairs(list) do
        assert(s:match("^[a-z]+$"), "status.sql_list: not a status: " .. tostring(s))
        quoted[i] = "'" .. s .. "'"
    end
    return "(" .. table.concat(quoted, ", ") .. ")"
end

-- What events and exits mean -----------------------------------------------------------------

--- The status a QMP event moves a VM to, and why; nil when the event does not change the row.
--- `panic_action` is QEMU's `-action panic=` (what QEMU does after GUEST_PANICKED).
---@param event string QMP event name
---@param data table|nil the event's data
---@return string|nil status, string|nil reason
function status.after_event(event, data)
    if event == "STOP" then return "paused", "STOP" end
    if event == "RESUME" then return "running", "RESUME" end
    if event == "GUEST_PANICKED" then
        -- data.action: what QEMU does now: "pause" (kept for debugging), "poweroff" (it exits),
        -- "run" (the guest goes on by itself).
        local action = type(data) == "table" and data.action or nil
        if action == "pause" then return "paused", "guest-panic" end
        return nil, "guest-panic"
    end
    return nil
end

--- What a QEMU exit means: "stopped" or "crashed", and the reason.
---@param facts {code: integer|nil, signal: integer|nil, shutdown: table|nil, stop_signal: string|nil, panicked: boolean|nil}
---@return string status, string reason
function status.after_exit(facts)
    if facts.panicked then return "crashed", "guest-panic" end
    if facts.stop_signal then return "stopped", "stop-signal" end
    if facts.shutdown then
        if facts.shutdown.reason == "guest-panic" then return "crashed", "guest-panic" end
        return "stopped", facts.shutdown.reason or "shutdown"
    end
    if facts.code == 0 then return "stopped", "exit-0" end
    if facts.signal then return "crashed", "signal" end
    return "crashed", "exit-code"
end

return status
