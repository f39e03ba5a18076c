-- The per-VM runner's policy: what QEMU's start, its QMP events and its exit mean for the VM's
-- row, its history log and its events log. The runner (`maqet __runner`, Swift) keeps only the
-- mechanism (spawn QEMU, poll its pidfd, the QMP socket and the stop signals) and calls these
-- hooks from its event loop, each in a protected call:
--
--   on_ready(ctx)         QEMU answered query-status; record the row (running, or paused when
--                         QEMU was started with -S). Return true, or nil, message, code to fail
--                         the start (QEMU is then killed and the start reported failed).
--   on_event(ctx, event)  a QMP event {name, data, timestamp}: STOP, RESUME, SHUTDOWN,
--                         GUEST_PANICKED, RESET, … Return "quit" to have the runner end QEMU.
--   on_exit(ctx, exit)    QEMU is gone: {code, signal, signal_name, description, stop_signal,
--                         shutdown}; record stopped/crashed and why.
--
-- ctx is the same table in every call (a hook may keep notes in it): vm_name, vm_id, runner_pid,
-- qemu_pid, qemu_start_time, qemu_status (from query-status), claim_pid (the runner_pid `maqet
-- start` claimed the row with; nil for a script's own maqet.runner.launch), paths (every file of
-- the VM, as qemu.paths names them: lock, dir, runner_qmp, client_qmp, qemu_log, runner_log,
-- history_log, events_log).
--
-- maqet.db opens on first use inside a hook and is closed after it: a hook that does not write
-- never opens the database, and no connection is held while the runner waits on QEMU. Every
-- write is one UPDATE that is a compare-and-set on this run's claim: the runner replaced the
-- start's claim_pid with its own pid when it spawned QEMU (`WHERE id = ? AND status = 'starting'
-- AND runner_pid = claim_pid`), and every later write says `WHERE id = ? AND runner_pid = ?`. A
-- runner whose row was taken over (by a reconciliation or another start) writes nothing: on_ready
-- fails the start (QEMU is killed) and on_event asks to end QEMU ("quit"), since nobody owns it.
-- When a hook raises, the runner logs it and writes the safe default itself (on_ready: running;
-- on_exit: stopped for a clean exit, else crashed).
local status = require("maqet.lib.status")
local events = require("maqet.lib.events")

local function history(ctx, message)
    if ctx.paths.history_log then maqet.history.append(ctx.paths.history_log, message) end
end

local function vm_of(ctx) return { name = ctx.vm_name, id = ctx.vm_id } end

--- Moves this run's row to `to` when its current status allows it; returns whether it did.
local function move(ctx, to, reason)
    local from = status.from_states(to)
    if #from == 0 then return false end
    local changed = assert(maqet.db:exec(([[UPDATE vm_instances SET status = ?, updated_at = CURRENT_TIMESTAMP
            WHERE id = ? AND runner_pid = ? AND status IN %s]]):format(status.sql_list(from)),
        to, ctx.vm_id, ctx.runner_pid))
    if changed > 0 then events.state(ctx.paths, vm_of(ctx), to, reason) end
    return changed > 0
end

--- Whether the row still carries this run (its runner_pid is this runner).
local function owned(ctx)
    local rows = assert(maqet.db:query("SELECT 1 AS ok FROM vm_instances WHERE id = ? AND runner_pid = ?", ctx.vm_id, ctx.runner_pid))
    return rows[1] ~= nil
end

local hooks = {}

function hooks.on_ready(ctx)
    -- QEMU started with -S (or paused by a script before we asked) is paused, not running.
    local now = ctx.qemu_status == "running" and "running" or "paused"
    local sql = [[UPDATE vm_instances
            SET status = ?, pid = ?, runner_pid = ?, qmp_socket_path = ?, updated_at = CURRENT_TIMESTAMP
            WHERE id = ?]]
    local changed
    if ctx.claim_pid then
        changed = assert(maqet.db:exec(sql .. " AND status = 'starting' AND runner_pid = ?",
            now, ctx.qemu_pid, ctx.runner_pid, ctx.paths.client_qmp, ctx.vm_id, ctx.runner_pid))
    else
        changed = assert(maqet.db:exec(sql, now, ctx.qemu_pid, ctx.runner_pid, ctx.paths.client_qmp, ctx.vm_id))
    end
    if changed == 0 then
        if ctx.claim_pid then
            return nil, ("the row of %s no longer belongs to this start (another maqet took it over); QEMU is stopped"):format(ctx.vm_name), "ECLAIM"
        end
        return nil, ("no VM with id %s in %s"):format(ctx.vm_id, maqet.db:path()), "ENOENT"
    end
    events.rotate(ctx.paths)
    events.state(ctx.paths, vm_of(ctx), now, "started")
    history(ctx, ("started: QEMU pid %d%s, runner pid %d%s"):format(ctx.qemu_pid,
        ctx.qemu_start_time and (" (start time " .. ctx.qemu_start_time .. ")") or "", ctx.runner_pid,
        now == "paused" and " (paused: QEMU status " .. tostring(ctx.qemu_status) .. ")" or ""))
    return true
end

function hooks.on_event(ctx, event)
    events.qmp(ctx.paths, vm_of(ctx), event)
    local data = type(event.data) == "table" and event.data or {}
    if event.name == "SHUTDOWN" then
        ctx.shutdown = { guest = data.guest == true, reason = data.reason or "unknown" }
    elseif event.name == "GUEST_PANICKED" then
        ctx.panicked = true
        local action = data.action or "?"
        local info = type(data.info) == "table" and data.info.type and (" (" .. tostring(data.info.type) .. ")") or ""
        if action == "pause" then
            history(ctx, "guest panicked" .. info .. ": guest-panic; QEMU keeps it paused for debugging (on_panic: pause); 'maqet stop' ends it")
        else
            history(ctx, "guest panicked" .. info .. ": guest-panic; QEMU action " .. action)
        end
    elseif event.name == "RESET" then
        history(ctx, ("reset (%s, reason %s)"):format(data.guest and "by the guest" or "by the host", tostring(data.reason or "unknown")))
    end
    local to, reason = status.after_event(event.name, data)
    if to then
        if ctx.panicked and to == "paused" then reason = "guest-panic" end
        if not move(ctx, to, reason) and ctx.claim_pid and not owned(ctx) then
            maqet.log.warn(("the row of %s no longer belongs to this runner: ending QEMU, which nobody owns"):format(ctx.vm_name))
            history(ctx, "runner: the row no longer names this run; QEMU ended (nobody owns it)")
            return "quit"
        end
    end
end

function hooks.on_exit(ctx, exit)
    local shutdown = exit.shutdown or ctx.shutdown
    local to, reason = status.after_exit({ code = exit.code, signal = exit.signal, stop_signal = exit.stop_signal,
        shutdown = shutdown, panicked = ctx.panicked })
    local how = "QEMU " .. exit.description
    if shutdown then
        how = how .. (" after SHUTDOWN (reason %s, %s)"):format(tostring(shutdown.reason), shutdown.guest and "by the guest" or "by the host")
    end
    if exit.stop_signal then how = how .. " after the runner got SIG" .. exit.stop_signal end
    if to == "crashed" then
        local text = (require("maqet.lib.files").read(ctx.paths.qemu_log) or ""):sub(-500)
        text = text:gsub("%s*\n%s*", "; "):gsub("^[;%s]+", ""):gsub("[;%s]+$", "")
        if text ~= "" then how = how .. "; stderr: " .. text end
    end
    local changed = assert(maqet.db:exec([[UPDATE vm_instances
            SET status = ?, pid = NULL, runner_pid = NULL, qmp_socket_path = NULL, updated_at = CURRENT_TIMESTAMP
            WHERE id = ? AND runner_pid = ?]], to, ctx.vm_id, ctx.runner_pid))
    if changed == 0 then
        maqet.log.warn(("the row of %s no longer belongs to this runner; left as it is"):format(ctx.vm_name))
    else
        events.state(ctx.paths, vm_of(ctx), to, reason)
    end
    history(ctx, ("%s: %s%s"):format(to, reason == "guest-panic" and "guest-panic: " or "", how))
end

return hooks
