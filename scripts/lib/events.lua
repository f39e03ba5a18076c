-- scripts/lib/events.lua: what goes into a VM's events log (<data dir>/logs/<name>.events.jsonl,
-- named by qemu.paths). One JSON object per line, written by maqet.history.event (which puts
-- "time" first); docs/lifecycle.md describes the format:
--   {"time":"…","vm":"g","id":"…","event":"STOP","data":{…}}                        a QMP event
--   {"time":"…","vm":"g","id":"…","event":"state","status":"paused","reason":"…"}   a status change
-- The per-VM runner (lifecycle/runner.lua) writes both kinds; vm.lua writes the status changes
-- maqet itself records (reconcile, stop). events.follow reads them back (maqet.vm.events, and
-- `maqet events`, lifecycle/events.lua); its code is lib/follow.lua, loaded on first use.

local events = {}

--- The events log is rotated to <file>.1 when it is larger than this, when a runner starts.
events.max_bytes = 1024 * 1024

--- Rotates the events log of `paths` (from qemu.paths) when it is over events.max_bytes.
function events.rotate(paths)
    if paths and paths.events_log then maqet.history.rotate(paths.events_log, events.max_bytes) end
end

--- Appends a QMP event ({name, data}) of VM `vm` ({name, id}).
function events.qmp(paths, vm, event)
    if not (paths and paths.events_log) then return end
    local data = event.data
    if type(data) ~= "table" then data = {} end
    maqet.history.event(paths.events_log, { vm = vm.name, id = vm.id, event = event.name, data = data })
end

--- Appends a status change of VM `vm` ({name, id}) to `status`, with `reason`.
function events.state(paths, vm, status, reason)
    if not (paths and paths.events_log) then return end
    maqet.history.event(paths.events_log, { vm = vm.name, id = vm.id, event = "state", status = status, reason = reason })
end

--- Follows the events logs of the VMs `names` (nil or empty: every VM): an iterator over their
--- entries (each: the decoded entry and its JSON line). See lib/follow.lua for opts and results.
---@param names? string[]
---@param opts? {from: "end"|"start"|nil, timeout_ms: number?, poll_ms: integer?}
function events.follow(names, opts)
    return require("maqet.lib.follow").follow(names, opts)
end

return events
