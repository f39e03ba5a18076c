-- maqet.vm: VMs as a Lua API (list, get, start, stop, qmp) and the truthful-state rules
-- (reconcile). The lifecycle workflows (scripts/lifecycle/*.lua) are thin wrappers around this
-- library; `maqet run` scripts reach it as maqet.vm.*.
--
-- A VM is named by its name, its id (UUID) or a unique id prefix: vm.resolve is the one lookup.
-- Failures return nil, message, code (codes: ENOVM no such VM, EAMBIGUOUS an id prefix several
-- VMs share, EBUSY already running,
-- EQEMU QEMU refused to start, ETIMEDOUT, ESTOP QEMU would not exit, ENOTRUNNING / ENOTPAUSED /
-- EPAUSED / EPANICKED the VM is in the wrong state for pause/resume/reset, or the QMP error class).
-- Statuses and their transitions are defined in lib/status.lua.
--
-- One VM, one runner: the VM's lock (qemu.paths(row).lock, maqet.runner.lock) is taken by `start`
-- before it claims the row and handed to the runner, which hands it to QEMU; it is free only when
-- no start, runner or QEMU of the VM lives. Only the lock's holder may decide that a VM is dead and
-- clean up after it; no pid is ever guessed for that.
--
-- Truthful state (vm.reconcile): a row in an active status (lib/status.lua) is checked against the real
-- process: its QEMU pid must be alive (not a zombie) and its /proc/PID/cmdline must contain the
-- VM's QMP socket path, so a reused PID is never taken for the VM. When QEMU is gone, its runner
-- records the exit (stopped for a clean exit, crashed otherwise). When the lock is free (or the
-- runner does not record the exit within a second), nobody saw how QEMU ended: the row is recorded
-- crashed, the reason is appended to <datadir>/logs/<name>.log, pid/runner_pid/qmp_socket_path
-- are cleared and, while holding the lock, the VM's runtime directory is removed (after copying
-- QEMU's last output to that log). A `starting` row stays starting while the lock is held (its
-- start or runner lives) and is recorded as soon as it is free, whatever process has its pid now.
-- A live QEMU whose runner died stays running (get() says runner_missing = true).
-- No write transaction is ever held while waiting on QEMU.

local qemu = require("maqet.lib.qemu")
local storage = require("maqet.lib.storage")
local console = require("maqet.lib.console")
local status = require("maqet.lib.status")
local events = require("maqet.lib.events")

local vm = {}

--- The statuses in which a QEMU may exist (defined in lib/status.lua; kept here for scripts).
vm.ACTIVE = status.ACTIVE
vm.default_stop_timeout_s = 30
vm.default_start_timeout_s = 30
vm.qmp_timeout_ms = 2000

-- Process primitives -----------------------------------------------------------------------
-- The host's maqet.process.info/signal/wait_pid (pidfds, /proc), under short local names.

local read_file = require("maqet.lib.files").read

local proc_info = maqet.process.info
local signal = maqet.process.signal

local function wait_pid(pid, timeout_ms)
    return maqet.process.wait_pid(pid, math.max(0, math.floor(timeout_ms)))
end

--- Seconds a process has been running, from its start_time (clock ticks since boot, USER_HZ 100).
function vm.uptime_s(info)
    local since_boot = tonumber((read_file("/proc/uptime") or ""):match("^%S+"))
    if not since_boot or not info or not info.start_time then return nil end
    return math.max(0, since_boot - info.start_time / 100)
end

--- The pid of this maqet process.
function vm.self_pid()
    return tonumber((read_file("/proc/self/stat") or ""):match("^(%d+)"))
end

vm.process_info = proc_info
vm.signal = signal
vm.wait_pid = wait_pid

--- Every live process (pid -> maqet.process.info) from /proc: the one scan of the process table
--- (cleanup looks for orphans with it; reconcile for a QEMU nobody recorded).
---@return table<integer, table>
function vm.processes()
    local list = {}
    for _, entry in ipairs(maqet.fs.list("/proc") or {}) do
        local pid = tonumber(entry)
        if pid and pid > 0 and math.type(pid) == "integer" then
            local info = proc_info(pid)
            if info and info.state ~= "Z" then list[pid] = info end
        end
    end
    return list
end

--- Whether `pid` is a live (non-zombie) process whose command line contains `marker`.
function vm.process_alive(pid, marker)
    if not pid then return false end
    local info = proc_info(pid)
    if not info or info.state == "Z" then return false end
    if marker then
        for _, word in ipairs(info.cmdline or {}) do
            if word:find(marker, 1, true) then return true, info end
        end
        return false
    end
    return true, info
end

-- Rows and logs ----------------------------------------------------------------------------

--- The shortest UUID prefix that names a VM (`maqet status 3f2a`).
vm.min_id_prefix = 4

--- The one place a VM is looked up by what the user typed: its name, its id (UUID) or a unique
--- prefix of its id of at least vm.min_id_prefix characters. A name wins over an id prefix that
--- also matches it. Returns the row, or nil, message, code: ENOVM (nothing matches) or
--- EAMBIGUOUS (a prefix that several VMs' ids start with; the message lists them).
---@param ident string
---@return table|nil row
---@return string? message
---@return string? code
function vm.resolve(ident)
    if type(ident) ~= "string" or ident == "" then
        return nil, "no VM named '' (give a VM name or id; see 'maqet ls')", "ENOVM"
    end
    local row = assert(maqet.db:query("SELECT * FROM vm_instances WHERE name = ?", ident))[1]
    if row then return row end
    local id = ident:lower()
    if #id >= vm.min_id_prefix and id:find("^[0-9a-f-]+$") then
        local rows = assert(maqet.db:query(
            "SELECT * FROM vm_instances WHERE lower(substr(id, 1, ?)) = ? ORDER BY name LIMIT 11", #id, id))
        if #rows == 1 then return rows[1] end
        if #rows > 1 then
            local names = {}
            for i, r in ipairs(rows) do
                if i > 10 then names[#names + 1] = "..."; break end
                names[#names + 1] = ("%s (%s)"):format(r.name, r.id)
            end
            return nil, ("'%s' is the start of %s VM ids: %s; type more of the id, or the name"):format(
                ident, #rows > 10 and "more than 10" or tostring(#rows), table.concat(names, ", ")), "EAMBIGUOUS"
        end
    end
    return nil, ("no VM named '%s' (see 'maqet ls')"):format(ident), "ENOVM"
end

-- A row by what the user typed (vm.resolve), or nil, message, code.
local row_by_name = vm.resolve

-- A row by its exact name (re-reading a row already found), or nil.
local function row_named(name)
    return assert(maqet.db:query("SELECT * FROM vm_instances WHERE name = ?", name))[1]
end

--- The VM's history log, <datadir>/logs/<name>.log (named by qemu.paths). `vm_or_name` is a
--- row or a VM name.
function vm.log_path(vm_or_name)
    local row = vm_or_name
    if type(row) ~= "table" then row = row_named(vm_or_name) or { id = vm_or_name, name = vm_or_name } end
    return qemu.paths(row).history_log
end

--- The last non-empty line of the VM's log (the runner appends the exit reason there), or nil.
function vm.last_log_line(name)
    local text = read_file(vm.log_path(name))
    if not text then return nil end
    local last
    for line in text:gmatch("[^\n]+") do
        if line:find("%S") then last = line end
    end
    return last
end

--- Appends a line to the VM's history log (`vm_or_name`: a row or a name), through the one
--- writer (maqet.history.append: "<UTC timestamp with ms> <line>").
function vm.log(vm_or_name, line)
    local path = vm.log_path(vm_or_name)
    if path then maqet.history.append(path, line) end
end

--- Records a status change maqet itself made (not the runner) in the VM's events log.
function vm.record_state(row, to, reason)
    events.state(qemu.paths(row), row, to, reason)
end

--- Removes a VM's runtime directory (its sockets, QEMU's log) after keeping the log's tail.
function vm.remove_runtime_dir(row)
    local paths = qemu.paths(row)
    if not storage.exists(paths.dir) then return false end
    -- The runner normally removes this directory itself; when it died, keep what it and QEMU
    -- last said in the VM's log before the files go.
    for _, file in ipairs({ { paths.qemu_log, "QEMU's last output" }, { paths.runner_log, "runner's last output" } }) do
        local text = read_file(file[1])
        if text and text:find("%S") then
            local last = {}
            for line in text:gmatch("[^\n]+") do
                last[#last + 1] = line
                if #last > 3 then table.remove(last, 1) end
            end
            vm.log(row.name, file[2] .. ": " .. table.concat(last, " | "))
        end
    end
    for _, file in ipairs({ paths.runner_qmp, paths.client_qmp, paths.qemu_log }) do os.remove(file) end
    if not os.remove(paths.dir) then
        -- Something else was left in it (a secret file, a pid file): it belongs to a dead VM.
        maqet.process.run({ "rm", "-rf", "--", paths.dir })
    end
    return true
end

-- Truthful state ---------------------------------------------------------------------------

--- The state of the VM's lock: "free" (no start, runner or QEMU of it lives), "held" (one
--- does), "mine" (this maqet holds it: it is starting or cleaning up the VM itself).
---@param row table
---@return "free"|"held"|"mine"
function vm.lock_state(row)
    local state, err = maqet.runner.lock_state(qemu.paths(row).lock)
    if not state then
        maqet.log.warn(("%s: cannot test its lock (%s); taken as held"):format(tostring(row.name), tostring(err)))
        return "held"
    end
    return state
end

--- Takes the VM's lock unless this maqet holds it already. Returns a function that lets it go
--- again (a no-op when it was held already), or nil when another process holds it.
---@return fun()|nil release, string? message, string? code
function vm.take_lock(row)
    local path = qemu.paths(row).lock
    if maqet.runner.lock_state(path) == "mine" then return function() end end
    local ok, message, code = maqet.runner.lock(path)
    if not ok then return nil, message, code end
    return function() maqet.runner.unlock(path) end
end

--- Whether the row's runner is alive. Nobody is when the VM's lock is free (or held by this
--- maqet). While the row says `starting` without a QEMU pid, the lock's holder is its start or
--- runner, and it being held is enough. Otherwise runner_pid must be alive, its command line must
--- name the VM's runtime directory (the runner runs `maqet __runner --spec <dir>/runner.json`)
--- and it must not have started after QEMU (a pid reused by a later process).
---@param row table
---@param qemu_info? table maqet.process.info of the VM's QEMU, when known
---@param lock? string the lock's state, when the caller tested it already
function vm.runner_alive(row, qemu_info, lock)
    if (lock or vm.lock_state(row)) ~= "held" then return false end
    if row.status == "starting" and not row.pid then return true end
    if not row.runner_pid then return false end
    local alive, info = vm.process_alive(row.runner_pid, qemu.paths(row).dir .. "/")
    if alive and qemu_info and info.start_time and qemu_info.start_time and info.start_time > qemu_info.start_time then
        return false
    end
    return alive
end

-- VMs left running by the published (Python) maqet ---------------------------------------------
-- A row adopted from the published maqet while its VM ran names that tool's runner
-- (`python3 -m maqet.vm_runner <vm id> <db path>`) in runner_pid, and its QEMU in pid; that QEMU
-- is a QMP *client* of the runner's socket (qmp_socket_path, `-chardev socket,path=…` without
-- server=on), so only their runner can talk to it. Such a VM is running, not "runner missing".

--- The published maqet's runner of `row`, when runner_pid is a live process whose command line
--- runs their `maqet.vm_runner` module for this VM's id: its maqet.process.info, else nil.
---@param row table
---@return table|nil
function vm.python_runner(row)
    if not row.runner_pid or not row.id then return nil end
    local info = proc_info(row.runner_pid)
    if not info or info.state == "Z" then return nil end
    local module, id = false, false
    for _, word in ipairs(info.cmdline or {}) do
        if word == "maqet.vm_runner" or word:find("maqet/vm_runner.py", 1, true) then module = true end
        if word == row.id then id = true end
    end
    if module and id then return info end
    return nil
end

--- For a `starting` row without a QEMU pid whose lock is held: the QEMU holding it, when the
--- process that claimed the row (runner_pid: the `maqet start`) and the VM's runner are both gone,
--- so nobody is left to record that QEMU. nil while either lives (the start is still going on).
--- The order matters: with the claimer gone no runner can appear, with no runner no QEMU can.
local function unrecorded_qemu(row, paths)
    if row.pid or (row.runner_pid and vm.process_alive(row.runner_pid)) then return nil end
    local qemu_pid, qemu_info
    for pid, info in pairs(vm.processes()) do
        local runner, names_socket = false, false
        for _, word in ipairs(info.cmdline or {}) do
            if word == "__runner" then runner = true end
            if word:find(paths.dir .. "/", 1, true) then names_socket = true end
        end
        if names_socket and runner then return nil end
        if names_socket and not runner and vm.process_alive(pid, paths.client_qmp) then qemu_pid, qemu_info = pid, info end
    end
    return qemu_pid and { pid = qemu_pid, info = qemu_info } or nil
end

--- Checks an active row against the real processes; records the truth when it differs.
--- Returns the (possibly updated) row with `alive` and `runner_missing` set.
---@param row table a vm_instances row
---@return table
function vm.reconcile(row)
    if not vm.ACTIVE[row.status] then
        row.alive = false
        return row
    end
    local paths = qemu.paths(row)
    local marker = row.qmp_socket_path or paths.client_qmp
    local qemu_alive, qemu_info = vm.process_alive(row.pid, marker)
    local lock = vm.lock_state(row)
    local runner_alive = vm.runner_alive(row, qemu_info, lock)
    if qemu_alive then
        row.alive = true
        row.runner_missing = not runner_alive
        row.process = qemu_info
        if not runner_alive then
            local python = vm.python_runner(row)
            if python and not (python.start_time and qemu_info.start_time and python.start_time > qemu_info.start_time) then
                row.runner_missing = false
                row.runner_kind = "python-maqet"
            end
        end
        if row.status == "starting" and not runner_alive then
            -- The runner died after starting QEMU and before recording it: QEMU runs the VM's
            -- disks, so the VM is running (without a runner); stop ends it like any other.
            local changed = maqet.db:transaction(function(tx)
                return assert(tx:exec([[UPDATE vm_instances SET status = 'running', qmp_socket_path = ?, updated_at = CURRENT_TIMESTAMP
                        WHERE id = ? AND status = 'starting' AND pid IS ? AND runner_pid IS ?]],
                    paths.client_qmp, row.id, row.pid, row.runner_pid))
            end)
            if changed > 0 then
                vm.log(row.name, ("running without its runner: the runner (pid %s) died while QEMU (pid %d) was starting"):format(
                    tostring(row.runner_pid), row.pid))
                vm.record_state(row, "running", "reconciled")
                row.status, row.qmp_socket_path = "running", paths.client_qmp
            end
        end
        return row
    end
    if row.status == "starting" and lock == "held" then
        local found = unrecorded_qemu(row, paths)
        if not found then
            row.alive = false -- its start or runner is still launching QEMU (or reporting its failure)
            return row
        end
        -- Its start and its runner were both killed after QEMU was spawned and before anyone
        -- recorded it: QEMU holds the lock and runs the VM's disks, so the VM is running (without
        -- a runner), and stop ends it like any other.
        local changed = maqet.db:transaction(function(tx)
            return assert(tx:exec([[UPDATE vm_instances SET status = 'running', pid = ?, qmp_socket_path = ?, updated_at = CURRENT_TIMESTAMP
                    WHERE id = ? AND status = 'starting' AND pid IS NULL AND runner_pid IS ?]],
                found.pid, paths.client_qmp, row.id, row.runner_pid))
        end)
        if changed > 0 then
            vm.log(row.name, ("running without its runner: its start and runner died before recording QEMU (pid %d)"):format(found.pid))
            vm.record_state(row, "running", "reconciled")
        end
        local fresh = row_named(row.name)
        if fresh and fresh.id == row.id and fresh.status ~= "starting" then return vm.reconcile(fresh) end
        row.alive = false
        return row
    end
    if runner_alive or vm.python_runner(row) then
        -- QEMU is gone but its runner (ours or the published maqet's) lives: it is recording
        -- the exit right now.
        wait_pid(row.runner_pid, 1000)
        local fresh = row_named(row.name)
        if not fresh or fresh.id ~= row.id then return fresh or row end
        if fresh.status ~= row.status or fresh.pid ~= row.pid then
            if vm.ACTIVE[fresh.status] then return vm.reconcile(fresh) end
            fresh.alive = false
            return fresh
        end
    end
    -- Nobody recorded the exit: we do.
    -- The runner records a clean exit (poweroff, quit) in the row itself; a row that still says
    -- running after QEMU and its runner are gone had nobody watching the exit: crashed, with the
    -- reason in the VM's log. (A guest that powered off while its runner was already dead is
    -- recorded crashed too: nobody saw how it ended.)
    local to = "crashed"
    local reason
    if row.pid then
        reason = ("QEMU (pid %d) is gone and its runner%s too; no exit was recorded"):format(
            row.pid, row.runner_pid and (" (pid " .. row.runner_pid .. ")") or "")
    else
        reason = "the start never completed: the runner is gone and QEMU never ran"
    end
    -- Holding the VM's lock, nobody can start it meanwhile, so its runtime directory is this
    -- dead run's to remove. When another process holds the lock, the row is still recorded (the
    -- update is a compare-and-set) but the directory is left to the lock's holder.
    local release = vm.take_lock(row)
    local ok, changed = pcall(function()
        return maqet.db:transaction(function(tx)
            return assert(tx:exec([[UPDATE vm_instances
                    SET status = ?, pid = NULL, runner_pid = NULL, qmp_socket_path = NULL, updated_at = CURRENT_TIMESTAMP
                    WHERE id = ? AND status = ? AND pid IS ? AND runner_pid IS ?]],
                to, row.id, row.status, row.pid, row.runner_pid))
        end)
    end)
    if not ok then
        if release then release() end
        error(changed, 0)
    end
    if changed > 0 then
        if to == "crashed" then vm.log(row.name, "recorded crashed: " .. reason) end
        vm.record_state(row, to, "reconciled")
        if release then vm.remove_runtime_dir(row) end
        maqet.log.info(("%s: recorded %s (%s)"):format(row.name, to, reason))
        row.status, row.pid, row.runner_pid, row.qmp_socket_path = to, nil, nil, nil
        row.reason = reason
    else
        local fresh = row_named(row.name)
        if fresh then row = fresh end
    end
    if release then release() end
    row.alive = false
    return row
end

--- Reconciles every active row; returns the rows that changed ({name, from, to}) and, by name,
--- the runner of rows that run without maqet's own ("missing", "python-maqet").
function vm.reconcile_all()
    local changed, runners = {}, {}
    for _, row in ipairs(assert(maqet.db:query(
        "SELECT * FROM vm_instances WHERE status IN " .. status.sql_list(status.active_list()) .. " ORDER BY name"))) do
        local before = row.status
        local after = vm.reconcile(row)
        if after.status ~= before then
            changed[#changed + 1] = { name = row.name, from = before, to = after.status, reason = after.reason }
        end
        if after.alive and after.runner_kind then
            runners[row.name] = after.runner_kind
        elseif after.alive and after.runner_missing then
            runners[row.name] = "missing"
        end
    end
    return changed, runners
end

-- Queries ------------------------------------------------------------------------------------

--- Every VM, sorted by name, with its true status.
---@return table[]
function vm.list()
    local rows = assert(maqet.db:query("SELECT * FROM vm_instances ORDER BY name"))
    for i, row in ipairs(rows) do
        rows[i] = vm.reconcile(row)
        rows[i].process = nil
    end
    return rows
end

--- One VM's row with its live status: alive, runner_missing, uptime_s, config (decoded),
--- last_log (last line of its log). nil, message, "ENOVM" when there is no such VM.
---@param name string
function vm.get(name)
    local row, missing, missing_code = row_by_name(name)
    if not row then return nil, missing, missing_code end
    name = row.name
    row = vm.reconcile(row)
    local ok, config = pcall(qemu.config, row)
    row.config = ok and config or {}
    if row.alive then row.uptime_s = vm.uptime_s(row.process) end
    row.process = nil
    row.last_log = vm.last_log_line(row)
    return row
end

-- Start ----------------------------------------------------------------------------------------

local start_locked

--- Starts a VM through its per-VM runner. opts: timeout_s (default 30), no_wait.
--- Returns {id, name, status, pid, runner_pid, qmp_socket_path} or nil, message, code.
function vm.start(name, opts)
    opts = opts or {}
    local row, missing, missing_code = row_by_name(name)
    if not row then return nil, missing, missing_code end
    name = row.name
    -- The VM's lock first: held from before the claim until the runner (and QEMU) have it, so no
    -- other start can begin and no reconciliation can take this start for a dead one. It may be
    -- held for a moment by an exiting runner or a reconciling maqet: then try again, briefly.
    local deadline = maqet.now() + vm.lock_wait_s
    local release, message, code
    while true do
        release, message, code = vm.take_lock(row)
        if release then break end
        if code ~= "EBUSY" then return nil, ("VM '%s' could not be started: %s"):format(name, message), code end
        row = vm.reconcile(row_named(name) or row)
        if vm.ACTIVE[row.status] then
            return nil, ("VM '%s' is already %s (pid %s); stop it first with 'maqet stop %s'"):format(
                name, row.status, tostring(row.pid or row.runner_pid or "-"), name), "EBUSY"
        end
        if maqet.now() >= deadline then
            return nil, ("VM '%s' is being started or stopped by another maqet right now (its lock %s is held); try again"):format(
                name, qemu.paths(row).lock), "EBUSY"
        end
        maqet.sleep(20)
    end
    local results = table.pack(pcall(start_locked, name, opts))
    release()
    if not results[1] then error(results[2], 0) end
    return table.unpack(results, 2, results.n)
end

--- How long a start waits for the VM's lock that a process which is not running the VM holds.
vm.lock_wait_s = 2

-- vm.start, holding the VM's lock.
start_locked = function(name, opts)
    local row, missing, missing_code = row_by_name(name)
    if not row then return nil, missing, missing_code end
    name = row.name
    row = vm.reconcile(row)
    if vm.ACTIVE[row.status] then
        return nil, ("VM '%s' is already %s (pid %s); stop it first with 'maqet stop %s'"):format(
            name, row.status, tostring(row.pid or row.runner_pid or "-"), name), "EBUSY"
    end
    local config = qemu.config(row)
    local paths = qemu.paths(row)
    local argv = qemu.argv(row, paths) -- a config QEMU cannot be built from fails before anything changes
    -- Rows maqet never validated (adopted from the Python maqet's database, written by hand) get
    -- the cheap half of add's binary check here: the name (add/apply also ran it with -version).
    local not_qemu = qemu.binary_problem(config, argv[1])
    if not_qemu then
        return nil, ("VM '%s' was not started: binary %s; fix it with 'maqet apply %s CONFIG'"):format(name, not_qemu, name), "ECONFIG"
    end
    local timeout_s = tonumber(opts.timeout_s) or vm.default_start_timeout_s

    -- Claim the row: status 'starting' with this maqet as its runner_pid, so a second start of the
    -- same VM is refused and a concurrent `ls` sees a start in progress (not a dead VM). The runner
    -- replaces runner_pid with its own (compare-and-set on this claim) as soon as QEMU is spawned.
    local me = vm.self_pid()
    local claimed = maqet.db:transaction(function(tx)
        return assert(tx:exec([[UPDATE vm_instances
                SET status = 'starting', pid = NULL, runner_pid = ?, qmp_socket_path = NULL, updated_at = CURRENT_TIMESTAMP
                WHERE id = ? AND status IS ?]], me, row.id, row.status))
    end)
    if claimed == 0 then
        return nil, ("VM '%s' is being started or changed by another maqet right now"):format(name), "EBUSY"
    end
    -- Undoes the claim after a failed start. The runner may have replaced runner_pid (and set
    -- pid) meanwhile; holding the VM's lock, nobody else can have claimed the row since.
    local function release()
        maqet.db:transaction(function(tx)
            assert(tx:exec([[UPDATE vm_instances SET status = ?, pid = NULL, runner_pid = NULL, updated_at = CURRENT_TIMESTAMP
                    WHERE id = ? AND status = 'starting']], row.status, row.id))
        end)
    end

    local ok, launched, message, code = pcall(function()
        storage.prepare(row, config)
        vm.remove_runtime_dir(row) -- leftovers of an earlier run that nobody cleaned
        console.prepare(row, config) -- rotate the console log, note where this boot's output begins
        maqet.log.info(("%s: starting %s"):format(name, qemu.shell_quote(argv)))
        return maqet.runner.launch({
            vm_name = row.name,
            vm_id = row.id,
            argv = argv,
            dir = paths.dir,
            runner_qmp = paths.runner_qmp,
            client_qmp = paths.client_qmp,
            qemu_log = paths.qemu_log,
            runner_log = paths.runner_log,
            history_log = paths.history_log,
            events_log = paths.events_log,
            timeout_ms = math.floor(timeout_s * 1000),
            no_wait = opts.no_wait and true or false,
            lock = paths.lock, -- held by this maqet: the runner gets it
            claim_pid = me, -- the runner's writes are compare-and-set on this claim
        })
    end)
    if not ok then
        release()
        error(launched, 0)
    end
    if not launched then
        release()
        if code == "EQEMU" then
            return nil, ("VM '%s' did not start: %s"):format(name, message), code
        elseif code == "ETIMEDOUT" then
            return nil, ("VM '%s' did not answer QMP within %g s (%s); see %s"):format(
                name, timeout_s, message, vm.log_path(name)), code
        end
        if code == "ENOENT" and argv[1] and message:find(argv[1], 1, true) then
            message = message .. " (install qemu-system-x86, or set 'binary:' in the VM's config with 'maqet apply')"
        end
        return nil, ("VM '%s' could not be started: %s"):format(name, message), code or "EFAIL"
    end
    if launched.runner_pid then
        -- --no-wait: the runner is on its own now; the row names it until it records running.
        maqet.db:transaction(function(tx)
            assert(tx:exec("UPDATE vm_instances SET runner_pid = ? WHERE id = ? AND status = 'starting' AND runner_pid = ?",
                launched.runner_pid, row.id, me))
        end)
    end
    local fresh = row_named(name) or row
    return {
        id = row.id,
        name = name,
        status = fresh.status == "starting" and (launched.status or "starting") or fresh.status,
        pid = launched.pid or fresh.pid,
        runner_pid = launched.runner_pid or fresh.runner_pid,
        qmp_socket_path = paths.client_qmp,
    }
end

-- Stop ------------------------------------------------------------------------------------------

vm.default_powerdown_interval_s = 2
--- How long a stop waits for the published maqet's runner to end its QEMU (SIGTERM to it).
vm.python_stop_wait_s = 10

local function connect(path)
    if not path or not maqet.qmp then return nil end
    local conn = maqet.qmp.connect(path, { timeout_ms = vm.qmp_timeout_ms })
    return conn
end

-- Waits (until `deadline`, a maqet.now() value) for the starts of the rows that say `starting`
-- to finish, one way or the other. Returns the rows, each re-read and reconciled.
local function settle_starts(rows, deadline)
    local function starting(row) return row.status == "starting" end
    while true do
        local waiting
        for i, row in ipairs(rows) do
            if starting(row) then
                local fresh = row_named(row.name)
                rows[i] = fresh and fresh.id == row.id and vm.reconcile(fresh) or row
                if starting(rows[i]) then waiting = rows[i] end
            end
        end
        local left_ms = (deadline - maqet.now()) * 1000
        if not waiting or left_ms <= 0 then return rows end
        -- The start's maqet (or, with --no-wait, the runner) writes the row or ends meanwhile;
        -- a pid that has already gone is reconciled on the next round, after a short pause.
        local pid = waiting.runner_pid
        if not pid or wait_pid(pid, math.min(left_ms, 50)) then maqet.sleep(math.min(left_ms, 20)) end
    end
end

--- Stops the given (reconciled) rows together. The graceful ladder: ACPI system_powerdown, sent
--- again every powerdown_interval_s (default 2: a guest that is still booting misses the first)
--- until QEMU exits or timeout_s (default 30) has passed, then QMP quit, SIGTERM, SIGKILL (5 s
--- each); force: SIGKILL at once. A row that says `starting` is waited for first (within
--- timeout_s): once its start has finished it is stopped like the others; a start that failed
--- leaves nothing to stop (start_failed = true).
--- opts.no_powerdown: begin the ladder at QMP quit (cleanup ends orphans this way).
--- A VM running under the published (Python) maqet's runner (row.runner_kind "python-maqet") is
--- first asked to stop through that runner: SIGTERM, its own stop path, which sends QMP quit to
--- QEMU over the one monitor QEMU has (a client connection to their runner, so maqet cannot send
--- ACPI powerdown itself); when QEMU is still there after python_stop_wait_s, the ladder goes on
--- with SIGTERM and SIGKILL to QEMU.
--- Returns one result per row: {name, status, stopped_by = "powerdown"|"quit"|"SIGTERM"|"SIGKILL"|
--- "python-maqet runner (quit)"|nil, was_running, powerdowns (how many were sent), start_failed}
--- or {name, error, code}.
function vm.stop_rows(rows, opts)
    opts = opts or {}
    local timeout_s = tonumber(opts.timeout_s) or vm.default_stop_timeout_s
    local interval_s = tonumber(opts.powerdown_interval_s) or vm.default_powerdown_interval_s
    if interval_s <= 0 then interval_s = vm.default_powerdown_interval_s end
    local deadline = maqet.now() + timeout_s

    local was_starting = {}
    for _, row in ipairs(rows) do
        if row.status == "starting" then was_starting[row.name] = true end
    end
    if next(was_starting) then rows = settle_starts(rows, deadline) end

    local results, pending = {}, {}
    for _, row in ipairs(rows) do
        local result = { id = row.id, name = row.name, status = row.status, was_running = vm.ACTIVE[row.status] or false }
        results[#results + 1] = result
        if row.status == "starting" then
            result.error = ("is still starting (by pid %s) after %g s; try again when the start has finished"):format(
                tostring(row.runner_pid), timeout_s)
            result.code = "EBUSY"
        elseif vm.ACTIVE[row.status] then
            local paths = qemu.paths(row)
            pending[#pending + 1] = {
                row = row, result = result, pid = row.pid,
                socket = row.qmp_socket_path or paths.client_qmp,
            }
        elseif was_starting[row.name] then
            -- The start failed meanwhile: nothing of it is left, the VM is not running.
            result.was_running, result.start_failed = true, true
        end
    end

    local function wait_all(until_time, step)
        for _, t in ipairs(pending) do
            if not t.done then
                if not t.pid or not vm.process_alive(t.pid) or wait_pid(t.pid, math.max(0, (until_time - maqet.now()) * 1000)) then
                    t.done = true
                    t.result.stopped_by = t.pid and (t.step or step) or nil
                end
            end
        end
    end
    local function remaining()
        for _, t in ipairs(pending) do if not t.done then return true end end
        return false
    end
    local function after(ms) return maqet.now() + ms / 1000 end

    -- Sends system_powerdown to every VM still there; returns whether any got it.
    local function powerdown()
        local sent = false
        for _, t in ipairs(pending) do
            if not t.done then
                if not t.conn and not t.gave_up then t.conn = connect(t.socket) end
                if t.conn and t.row.status == "paused" then
                    -- A paused guest cannot act on ACPI: a paused VM is ended with quit at once.
                    if t.step ~= "quit" then
                        t.step = "quit"
                        t.conn:execute("quit", nil, { timeout_ms = vm.qmp_timeout_ms })
                    end
                    sent = true
                elseif t.conn then
                    local ok, desc, code = t.conn:execute("system_powerdown", nil, { timeout_ms = vm.qmp_timeout_ms })
                    if ok then
                        sent = true
                        t.result.powerdowns = (t.result.powerdowns or 0) + 1
                    else
                        maqet.log.info(("%s: system_powerdown: %s"):format(t.row.name, tostring(desc)))
                        if code == "ETIMEDOUT" or code == "EPIPE" then t.conn:close(); t.conn = nil; t.gave_up = true end
                    end
                else
                    t.gave_up = true
                end
            end
        end
        return sent
    end

    wait_all(0, nil) -- a VM that died meanwhile
    for _, t in ipairs(pending) do
        if not t.done and t.row.runner_kind == "python-maqet" then
            t.gave_up = true -- its monitor is their runner's; no QMP from here
            t.result.runner = "python-maqet"
            if not opts.force and vm.python_runner(t.row) then
                signal(t.row.runner_pid, "TERM")
                t.asked_python = true
            end
        end
    end
    for _, t in ipairs(pending) do
        if t.asked_python and wait_pid(t.pid, vm.python_stop_wait_s * 1000) then
            t.done = true
            t.result.stopped_by = "python-maqet runner (quit)"
        end
    end
    if opts.force then
        for _, t in ipairs(pending) do if not t.done then signal(t.pid, "KILL") end end
        wait_all(after(5000), "SIGKILL")
    else
        -- A QEMU whose monitor does not answer (wedged, SIGSTOPped) is not waited on for ACPI
        -- or quit: each QMP call has a timeout and the escalation moves on to signals.
        while remaining() and maqet.now() < deadline and not opts.no_powerdown do
            if not powerdown() then break end
            wait_all(math.min(deadline, after(interval_s * 1000)), "powerdown")
        end
        if remaining() then
            local sent = false
            for _, t in ipairs(pending) do
                if not t.done and not t.conn and not t.gave_up then t.conn = connect(t.socket) end
                if not t.done and t.conn then
                    local ok = t.conn:execute("quit", nil, { timeout_ms = vm.qmp_timeout_ms })
                    sent = sent or ok ~= nil
                end
            end
            wait_all(after(sent and 5000 or 0), "quit")
        end
        for _, t in ipairs(pending) do if t.conn then t.conn:close(); t.conn = nil end end
        if remaining() then
            -- SIGCONT after SIGTERM, so a stopped (SIGSTOP) QEMU handles the SIGTERM.
            for _, t in ipairs(pending) do
                if not t.done then signal(t.pid, "TERM"); signal(t.pid, "CONT") end
            end
            wait_all(after(5000), "SIGTERM")
        end
        if remaining() then
            for _, t in ipairs(pending) do if not t.done then signal(t.pid, "KILL") end end
            wait_all(after(5000), "SIGKILL")
        end
    end

    -- QEMU has exited. Let each runner record it and go; then the row says stopped.
    for _, t in ipairs(pending) do
        local row = t.row
        if not t.done then
            t.result.error = ("did not stop: QEMU (pid %d) is still there after SIGKILL"):format(t.pid)
            t.result.code = "ESTOP"
        else
            if row.runner_kind == "python-maqet" and vm.python_runner(row) and not wait_pid(row.runner_pid, 3000) then
                -- Their runner records the end in the row itself and exits; one that does not is
                -- ended (it is still their runner of this VM: checked just before).
                signal(row.runner_pid, "TERM")
                if not wait_pid(row.runner_pid, 2000) and vm.python_runner(row) then
                    signal(row.runner_pid, "KILL")
                    wait_pid(row.runner_pid, 2000)
                end
            elseif vm.runner_alive(row) and not wait_pid(row.runner_pid, 3000) then
                -- SIGCONT after SIGTERM, so a stopped (SIGSTOP) runner handles it; a runner that
                -- still does not end is killed: its QEMU is gone, nothing of the VM is lost.
                signal(row.runner_pid, "TERM")
                signal(row.runner_pid, "CONT")
                if not wait_pid(row.runner_pid, 2000) then
                    signal(row.runner_pid, "KILL")
                    wait_pid(row.runner_pid, 2000)
                end
            end
            -- With the VM's lock (free once the runner has gone), nobody can start the VM while
            -- the row is written and its runtime directory removed.
            local release = vm.take_lock(row)
            local lock_deadline = maqet.now() + vm.lock_wait_s
            while not release and maqet.now() < lock_deadline do
                maqet.sleep(20)
                release = vm.take_lock(row)
            end
            local ok, err = pcall(maqet.db.transaction, maqet.db, function(tx)
                if release then
                    assert(tx:exec([[UPDATE vm_instances
                            SET status = 'stopped', pid = NULL, runner_pid = NULL, qmp_socket_path = NULL, updated_at = CURRENT_TIMESTAMP
                            WHERE id = ? AND (pid IS NULL OR pid IS ?)]], row.id, row.pid))
                else
                    -- Another maqet holds the lock (a new start): only this run's row is ours.
                    assert(tx:exec([[UPDATE vm_instances
                            SET status = 'stopped', pid = NULL, runner_pid = NULL, qmp_socket_path = NULL, updated_at = CURRENT_TIMESTAMP
                            WHERE id = ? AND status = ? AND pid IS ? AND runner_pid IS ?]], row.id, row.status, row.pid, row.runner_pid))
                end
            end)
            if release then
                if ok then vm.remove_runtime_dir(row) end
                release()
            end
            if not ok then error(err, 0) end
            vm.record_state(row, "stopped", "stopped by: " .. (t.result.stopped_by or "nothing"))
            vm.log(row.name, "stopped by: " .. (t.result.stopped_by or "nothing (QEMU was not running)"))
            t.result.status = "stopped"
        end
    end
    return results
end

--- Stops one VM. opts: force, timeout_s (default 30), powerdown_interval_s (default 2).
--- Returns {id, name, status, stopped_by, was_running, powerdowns, start_failed} or nil, message, code.
function vm.stop(name, opts)
    local row, missing, missing_code = row_by_name(name)
    if not row then return nil, missing, missing_code end
    name = row.name
    row = vm.reconcile(row)
    local result = vm.stop_rows({ row }, opts)[1]
    if result.error then return nil, ("VM '%s' %s"):format(name, result.error), result.code end
    return result
end

-- QMP ---------------------------------------------------------------------------------------------

--- Runs one QMP command on a running VM's client monitor.
--- Returns QEMU's return value, or nil, message, code (ENOVM, ENOTRUNNING, the QMP error class, ...).
function vm.qmp(name, command, args, opts)
    local row, missing, missing_code = row_by_name(name)
    if not row then return nil, missing, missing_code end
    name = row.name
    row = vm.reconcile(row)
    if not status.has_qemu(row.status) or not row.alive then
        return nil, ("VM '%s' is not running (status %s)"):format(name, row.status), "ENOTRUNNING"
    end
    local timeout_ms = opts and opts.timeout_ms or 5000
    local conn, err, code = maqet.qmp.connect(row.qmp_socket_path or qemu.paths(row).client_qmp, { timeout_ms = timeout_ms })
    if not conn then return nil, err, code end
    local result, desc, class = conn:execute(command, args, { timeout_ms = timeout_ms })
    conn:close()
    if result == nil then return nil, desc, class end
    return result
end

-- Snapshots ---------------------------------------------------------------------------------------

--- maqet.vm.snapshot(name, action, snap, opts): create, list, load or delete snapshots of a VM
--- (scripts/lib/snapshot.lua, loaded on first use).
function vm.snapshot(...)
    return require("maqet.lib.snapshot").run(...)
end

-- Pause, resume, reset -------------------------------------------------------------------------------
-- QMP `stop`, `cont` and `system_reset` on the client monitor. The runner's on_event hook records
-- the STOP/RESUME events QEMU sends (lifecycle/runner.lua); these wait until the row says so, and
-- write it themselves only when the VM has no runner to do it (or it did not within the wait).

vm.control_wait_ms = 5000

--- Waits until the row of `row.id` says `want`; returns the fresh row, or nil after `timeout_ms`.
local function wait_for_status(row, want, timeout_ms)
    local deadline = maqet.now() + timeout_ms / 1000
    while true do
        local fresh = row_named(row.name)
        if not fresh or fresh.id ~= row.id or fresh.status == want then return fresh end
        if maqet.now() >= deadline then return nil end
        maqet.sleep(5)
    end
end

--- The reconciled row of a VM whose QEMU runs, or nil, message, code.
local function live_row(name, verb)
    local row, missing, missing_code = row_by_name(name)
    if not row then return nil, missing, missing_code end
    name = row.name
    row = vm.reconcile(row)
    if not row.alive or not status.has_qemu(row.status) then
        return nil, ("cannot %s VM '%s': it is not running (status %s); start it with 'maqet start %s'"):format(
            verb, name, row.status, name), "ENOTRUNNING"
    end
    return row
end

--- Sends `command` and makes the row say `want` (the runner's hook, else this function).
local function control(row, command, want, reason)
    local ok, message, code = vm.qmp(row.name, command, nil, { timeout_ms = vm.qmp_timeout_ms })
    if ok == nil then return nil, ("VM '%s': %s failed: %s"):format(row.name, command, tostring(message)), code end
    local fresh = wait_for_status(row, want, row.runner_missing and 0 or vm.control_wait_ms)
    if not fresh then
        local changed = maqet.db:transaction(function(tx)
            return assert(tx:exec(("UPDATE vm_instances SET status = ?, updated_at = CURRENT_TIMESTAMP WHERE id = ? AND status IN %s"):format(
                status.sql_list(status.from_states(want))), want, row.id))
        end)
        if changed > 0 then vm.record_state(row, want, reason) end
    end
    vm.log(row, ("%s (maqet %s)"):format(want, reason))
    return { name = row.name, status = want }
end

--- Pauses a running VM (QMP `stop`): the guest's CPUs stop, QEMU stays. Returns {name, status}
--- or nil, message, code (ENOVM, ENOTRUNNING, EPAUSED already paused).
function vm.pause(name)
    local row, message, code = live_row(name, "pause")
    if not row then return nil, message, code end
    name = row.name
    if row.status == "paused" then
        return nil, ("VM '%s' is already paused; resume it with 'maqet resume %s'"):format(name, name), "EPAUSED"
    end
    if row.status ~= "running" then
        return nil, ("cannot pause VM '%s': it is %s"):format(name, row.status), "ENOTRUNNING"
    end
    return control(row, "stop", "paused", "pause")
end

--- Resumes a paused VM (QMP `cont`). Returns {name, status} or nil, message, code (ENOVM,
--- ENOTRUNNING, ENOTPAUSED running but not paused).
function vm.resume(name)
    local row, message, code = live_row(name, "resume")
    if not row then return nil, message, code end
    name = row.name
    if row.status ~= "paused" then
        return nil, ("cannot resume VM '%s': it is not paused (status %s)"):format(name, row.status), "ENOTPAUSED"
    end
    -- QEMU accepts `cont` on a guest it paused after a kernel panic (on_panic: pause), and the
    -- panicked kernel then goes on with its panic (hangs or reboots) while the row would say
    -- running: refused, so the status stays true.
    local qs = vm.qmp(name, "query-status", nil, { timeout_ms = vm.qmp_timeout_ms })
    if type(qs) == "table" and qs.status == "guest-panicked" then
        return nil, ("cannot resume VM '%s': its guest panicked and QEMU holds it for debugging (on_panic: pause); reset it with 'maqet reset %s' or end it with 'maqet stop %s'"):format(
            name, name, name), "EPANICKED"
    end
    return control(row, "cont", "running", "resume")
end

--- Hard reset (QMP `system_reset`: like the reset button, no shutdown inside the guest) of a
--- running or paused VM; the status does not change. Returns {name, status} or nil, message, code.
function vm.reset(name)
    local row, message, code = live_row(name, "reset")
    if not row then return nil, message, code end
    name = row.name
    local ok, err, class = vm.qmp(name, "system_reset", nil, { timeout_ms = vm.qmp_timeout_ms })
    if ok == nil then return nil, ("VM '%s': system_reset failed: %s"):format(name, tostring(err)), class end
    vm.log(row, "reset by maqet reset (hard reset: system_reset)")
    return { name = name, status = row.status }
end

-- Workflows ---------------------------------------------------------------------------------------

vm.status_of_code = {
    ENOVM = "not_found", ETIMEDOUT = "timeout", EREFUSED = "refused",
    -- an id prefix that names several VMs: the user must type more (usage error, nothing done)
    EAMBIGUOUS = "usage",
    ECONFIG = "usage", -- the stored config cannot be run as it is (fix it with maqet apply)
    -- the VM is in the wrong state for the operation: refused, nothing changed
    ENOTRUNNING = "refused", ENOTPAUSED = "refused", EPAUSED = "refused", EPANICKED = "refused",
}

--- Asks `question` on the terminal (y/N on stderr, the answer from stdin) unless `granted`
--- (the command's --yes or --force); without a terminal (`interactive` false) it refuses with
--- one line that says which flag to add (`how`). Returns whether the answer was yes.
---@param question string  "Remove 3 VMs?"
---@param opts {granted?: boolean, interactive?: boolean, how: string}
function vm.confirm(question, opts)
    if opts.granted then return true end
    if not opts.interactive then
        maqet.error(question:gsub("%?$", "") .. ": refused without a terminal to ask on; " .. opts.how, "refused")
    end
    io.stderr:write(question, " [y/N] ")
    io.stderr:flush()
    local answer = io.read("l") or ""
    return answer:lower():match("^%s*ye?s?%s*$") ~= nil and answer:find("%S") ~= nil
end

--- For workflows: returns `value` when it is not nil, else raises maqet.error(message) with the
--- exit status matching `code` (ENOVM -> not_found, ETIMEDOUT -> timeout, others -> failure).
function vm.check(value, message, code)
    if value ~= nil then return value end
    maqet.error(message or "failed", vm.status_of_code[code] or "failure")
end

return vm
