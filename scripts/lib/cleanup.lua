-- scripts/lib/cleanup.lua: what `maqet cleanup` (and `maqet doctor --fix`) repairs, in two steps:
-- `plan()` finds it, `apply(plan)` does it. Nothing is guessed from a pid alone:
--
-- - Rows: every row in an active status is reconciled first (vm.reconcile_all: the same truth
--   `ls` records), so a dead VM is stopped or crashed before anything else is looked at.
-- - Orphan QEMUs: a live QEMU of a row whose runner is gone (reconcile: pid alive and its command
--   line naming the VM's QMP socket), and a live QEMU whose command line names a maqet QMP socket
--   (<runtime dir>/<id prefix>/qmp.sock) that no row owns (its row was removed). Each is
--   identified by pid + start time + that command line, checked again right before every
--   signal, so an unrelated process that reused the pid is never touched. It is ended with QMP
--   quit (QEMU flushes its disks), then SIGTERM, then SIGKILL. A QEMU without a row counts only
--   when its runtime directory's runner.json names this data directory: several data
--   directories (--maqet-data-dir) share one runtime directory, and another one's VMs are not
--   orphans.
-- - Runtime directories (<runtime dir>/<id prefix>/) of no live VM: no row in an active status
--   owns them and the VM's lock is free (taken while the directory is removed); one without a row
--   only when no lock of that id prefix is held, no live process names it and its runner.json
--   (if any) names this data directory.
-- - Lock files: maqet's own (<runtime dir>/locks/<vm id>.lock) are never removed, whatever VM
--   they belong to: a lock file unlinked while another maqet is taking it would let a second
--   holder in (docs/architecture.md), and the VM may belong to another data directory. The
--   published maqet's CLI start locks (locks/<name as typed>.lock, not a VM id) are removed when
--   free.
-- - Files the published (Python) maqet left in <runtime dir>/sockets and /pids
--   (<vm id>.sock, .auth, .pid) for VMs that no live runner of theirs runs (of this database
--   or another).
local vm = require("maqet.lib.vm")
local qemu = require("maqet.lib.qemu")
local read_file = require("maqet.lib.files").read

local cleanup = {}

--- Entries of the runtime directory that are not per-VM directories.
cleanup.shared_dirs = { locks = true, sockets = true, pids = true }
--- Files of maqet's own per-VM runtime directory (one is enough to recognise one).
cleanup.vm_dir_files = { "runner.json", "qmp.sock", "runner.qmp", "qemu.log", "runner.log", "console.sock", "console.lock" }
--- How long an orphan gets for each step (quit, SIGTERM, SIGKILL).
cleanup.step_ms = 5000

local function exists(path) return maqet.fs.stat(path) ~= nil end

--- Whether `info` (maqet.process.info) is a QEMU: argv[1]'s file name starts with qemu-system.
local function is_qemu(info)
    local exe = info.cmdline and info.cmdline[1]
    return exe ~= nil and (exe:match("[^/]*$") or ""):find("^qemu%-system") ~= nil
end

--- The maqet QMP socket paths under `root` that `info`'s command line names, by id prefix.
local function named_sockets(info, root)
    local found = {}
    local prefix = root .. "/"
    for _, word in ipairs(info.cmdline or {}) do
        local at = word:find(prefix, 1, true)
        if at then
            local rest = word:sub(at + #prefix)
            local dir = rest:match("^([^/,]+)/qmp%.sock")
            if dir then found[dir] = prefix .. dir .. "/qmp.sock" end
        end
    end
    return found
end

--- Whether `pid` is still the process `expected` described (start time and command line).
local function same_process(pid, expected)
    local now = vm.process_info(pid)
    if not now or now.state == "Z" or now.start_time ~= expected.start_time then return false end
    if #(now.cmdline or {}) ~= #(expected.cmdline or {}) then return false end
    for i, word in ipairs(now.cmdline) do
        if word ~= expected.cmdline[i] then return false end
    end
    return true
end

--- Whether `name` has the shape of a VM id (maqet and the published maqet make UUIDs).
local function is_vm_id(name)
    return name:match("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$") ~= nil
end

--- The data directory a per-VM runtime directory's runner.json names, or nil.
local function spec_data_dir(dir)
    local text = read_file(dir .. "/runner.json")
    local spec = text and maqet.json.decode(text)
    return type(spec) == "table" and type(spec.data_dir) == "string" and spec.data_dir or nil
end

--- Whether `data_dir` is this command's data directory.
local function our_data_dir(data_dir)
    local mine = maqet.data_dir()
    return data_dir ~= nil and mine ~= nil and maqet.fs.realpath(data_dir) == maqet.fs.realpath(mine)
end

--- Finds what there is to clean. Reconciles every active row first (that is recorded at once,
--- as `ls` does). Returns {reconciled, orphans, runtime_dirs, lock_files, python_files}.
function cleanup.plan()
    local plan = {
        reconciled = vm.reconcile_all(),
        orphans = {}, runtime_dirs = {}, lock_files = {}, python_files = {},
    }
    local root = qemu.runtime_dir()
    local rows = assert(maqet.db:query("SELECT * FROM vm_instances ORDER BY name"))
    local by_prefix, by_id, live_prefix, python_ids = {}, {}, {}, {}
    for _, row in ipairs(rows) do
        by_id[row.id] = row
        by_prefix[tostring(row.id):sub(1, 12)] = row
        if vm.ACTIVE[row.status] then
            local fresh = vm.reconcile(row)
            if fresh.alive and fresh.runner_missing then
                plan.orphans[#plan.orphans + 1] = {
                    name = row.name, id = row.id, pid = fresh.pid, row = fresh,
                    process = fresh.process, socket = fresh.qmp_socket_path or qemu.paths(fresh).client_qmp,
                }
            end
            if fresh.runner_kind == "python-maqet" then python_ids[row.id] = true end
            if vm.ACTIVE[fresh.status] then live_prefix[tostring(row.id):sub(1, 12)] = true end
        end
    end

    -- QEMUs naming a maqet socket of no row (the row was removed while QEMU ran), and every
    -- runtime directory some live process names (never removed).
    local entries = maqet.fs.list(root) or {}
    local named = {}
    local in_root = (root:gsub("%p", "%%%0")) .. "/([^/,]+)/"
    for pid, info in pairs(vm.processes()) do
        local their_runner = false
        for _, word in ipairs(info.cmdline or {}) do
            local dir = word:match(in_root)
            if dir then named[dir] = true end
            if word == "maqet.vm_runner" or word:find("maqet/vm_runner.py", 1, true) then their_runner = true end
        end
        if their_runner then
            -- A live runner of the published maqet (of this database or another): its files stay.
            for _, word in ipairs(info.cmdline) do python_ids[word] = true end
        end
        if is_qemu(info) then
            for dir, socket in pairs(named_sockets(info, root)) do
                if not by_prefix[dir] and our_data_dir(spec_data_dir(root .. "/" .. dir)) then
                    plan.orphans[#plan.orphans + 1] = { name = nil, id = dir, pid = pid, process = info, socket = socket }
                    live_prefix[dir] = true -- its directory goes after it has ended
                    break
                end
            end
        end
    end
    local locks = maqet.fs.list(root .. "/locks") or {}

    -- Per-VM runtime directories of no live VM.
    for _, name in ipairs(entries) do
        local path = root .. "/" .. name
        local st = maqet.fs.stat(path)
        if st and st.type == "directory" and not cleanup.shared_dirs[name] and not live_prefix[name] then
            local row = by_prefix[name]
            local ours
            if row then
                ours = not named[name] and vm.lock_state(row) == "free"
            else
                -- No row here: a removed VM of ours, or a VM of another data directory. Only a
                -- directory nothing uses, and whose spec (if any) names this data directory.
                for _, file in ipairs(cleanup.vm_dir_files) do
                    if exists(path .. "/" .. file) then ours = true; break end
                end
                local spec_dir = spec_data_dir(path)
                if spec_dir and not our_data_dir(spec_dir) then ours = false end
                if named[name] then ours = false end
                for _, lock in ipairs(locks) do
                    if ours and lock:sub(1, #name) == name and maqet.runner.lock_state(root .. "/locks/" .. lock) ~= "free" then
                        ours = false
                    end
                end
            end
            if ours then
                plan.runtime_dirs[#plan.runtime_dirs + 1] = { path = path, name = row and row.name or nil, row = row }
            end
        end
    end

    -- The published maqet's CLI start locks (named by the VM as typed), when free. maqet's own
    -- locks (named by VM id) are never removed.
    for _, file in ipairs(locks) do
        local stem = file:match("^(.+)%.lock$")
        if stem and not is_vm_id(stem) then
            local path = root .. "/locks/" .. file
            if maqet.runner.lock_state(path) == "free" then plan.lock_files[#plan.lock_files + 1] = { path = path } end
        end
    end

    -- The published maqet's socket, secret and pid files of VMs its runner no longer runs.
    for _, sub in ipairs({ "sockets", "pids" }) do
        for _, file in ipairs(maqet.fs.list(root .. "/" .. sub) or {}) do
            local id = file:match("^(.+)%.sock$") or file:match("^(.+)%.auth$") or file:match("^(.+)%.pid$")
            if id and not python_ids[id] then
                plan.python_files[#plan.python_files + 1] = { path = root .. "/" .. sub .. "/" .. file }
            end
        end
    end
    return plan
end

--- How many things the plan would change (the reconciled rows are recorded already).
function cleanup.count(plan)
    return #plan.orphans + #plan.runtime_dirs + #plan.lock_files + #plan.python_files
end

--- Ends one orphan QEMU: QMP quit on its own socket, then SIGTERM, then SIGKILL, checking
--- before each signal that the pid is still the process the plan found. Returns the step that
--- ended it, or nil and why not.
local function end_orphan(orphan)
    local pid, expected = orphan.pid, orphan.process
    if not same_process(pid, expected) then return "gone" end
    local conn = maqet.qmp.connect(orphan.socket, { timeout_ms = vm.qmp_timeout_ms })
    if conn then
        conn:execute("quit", nil, { timeout_ms = vm.qmp_timeout_ms })
        conn:close()
        if vm.wait_pid(pid, cleanup.step_ms) then return "quit" end
    end
    for _, sig in ipairs({ "TERM", "KILL" }) do
        if not same_process(pid, expected) then return "gone" end
        vm.signal(pid, sig)
        if sig == "TERM" then vm.signal(pid, "CONT") end
        if vm.wait_pid(pid, cleanup.step_ms) then return "SIG" .. sig end
    end
    return nil, ("QEMU (pid %d) is still there after SIGKILL"):format(pid)
end

--- Does what the plan found. Returns the plan with each item's result (`done`, `ended_by`,
--- `error`) and `cleaned`, the number of things done.
function cleanup.apply(plan)
    local cleaned = 0
    for _, orphan in ipairs(plan.orphans) do
        if orphan.row then
            -- A VM of a row: the stop ladder from quit on, which records the row stopped and
            -- removes its runtime directory holding its lock.
            local result = vm.stop_rows({ orphan.row }, { no_powerdown = true, timeout_s = cleanup.step_ms / 1000 })[1]
            orphan.ended_by, orphan.error = result.stopped_by, result.error
        else
            orphan.ended_by, orphan.error = end_orphan(orphan)
            if orphan.ended_by then
                maqet.process.run({ "rm", "-rf", "--", qemu.runtime_dir() .. "/" .. orphan.id })
            end
        end
        if not orphan.error then orphan.done = true; cleaned = cleaned + 1 end
    end
    for _, dir in ipairs(plan.runtime_dirs) do
        local release = dir.row and vm.take_lock(dir.row)
        if not dir.row or release then
            local now = dir.row and assert(maqet.db:query("SELECT status FROM vm_instances WHERE id = ?", dir.row.id))[1]
            if not now or not vm.ACTIVE[now.status] then
                maqet.process.run({ "rm", "-rf", "--", dir.path })
                dir.done = not exists(dir.path)
            end
            if release then release() end
        end
        if dir.done then cleaned = cleaned + 1 else dir.error = "in use now; left alone" end
    end
    for _, list in ipairs({ plan.lock_files, plan.python_files }) do
        for _, item in ipairs(list) do
            local ok, err = os.remove(item.path)
            item.done = ok ~= nil
            if item.done then cleaned = cleaned + 1 else item.error = err end
        end
    end
    plan.cleaned = cleaned
    return plan
end

--- One line per thing the plan would change, for a human.
function cleanup.describe(plan)
    local lines = {}
    for _, o in ipairs(plan.orphans) do
        lines[#lines + 1] = ("end orphan QEMU pid %d (%s)"):format(o.pid, o.name and ("VM '" .. o.name .. "', its runner is gone")
            or ("runtime directory " .. o.id .. ", its VM was removed"))
    end
    for _, d in ipairs(plan.runtime_dirs) do lines[#lines + 1] = "remove runtime directory " .. d.path end
    for _, l in ipairs(plan.lock_files) do lines[#lines + 1] = "remove the published maqet's start lock " .. l.path end
    for _, f in ipairs(plan.python_files) do lines[#lines + 1] = "remove the published maqet's leftover " .. f.path end
    return lines
end

--- The plan as plain tables for JSON (no rows or process tables inside).
function cleanup.report(plan, dry_run)
    local null = maqet.json.null
    local function items(list, fields)
        local out = maqet.json.array()
        for _, item in ipairs(list) do
            local o = {}
            for _, f in ipairs(fields) do
                local v = item[f]
                if v == nil then v = null end
                o[f] = v
            end
            out[#out + 1] = o
        end
        return out
    end
    local done_fields = dry_run and {} or { "done", "error" }
    local function with(list, extra)
        for _, f in ipairs(done_fields) do list[#list + 1] = f end
        for _, f in ipairs(extra or {}) do list[#list + 1] = f end
        return list
    end
    local orphans = items(plan.orphans, with({ "name", "id", "pid", "socket" }, dry_run and {} or { "ended_by" }))
    return {
        dry_run = dry_run and true or false,
        reconciled = maqet.json.array(plan.reconciled),
        orphans = orphans,
        runtime_dirs = items(plan.runtime_dirs, with({ "path", "name" })),
        lock_files = items(plan.lock_files, with({ "path" })),
        python_files = items(plan.python_files, with({ "path" })),
        found = cleanup.count(plan),
        cleaned = plan.cleaned or 0,
    }
end

return cleanup
