-- maqet.lib.snapshot: snapshots of a VM's disks (and, while it runs, of its RAM and devices).
-- Used by `maqet snapshot create|list|load|delete` (scripts/lifecycle/snapshot.lua) and by
-- scripts as maqet.vm.snapshot(name, action, snap, opts).
--
-- Policy:
-- * A snapshot lives inside the VM's qcow2 images (internal snapshots, one per disk, same tag).
--   Every writable qcow2 disk of the VM's config (`storage`) gets it: all disks or none.
--   Read-only disks and virtfs shares are left out (they cannot change); a writable raw disk is
--   refused, naming it (raw images cannot hold snapshots); a VM with no qcow2 disk is refused.
-- * A stopped VM is handled with `qemu-img snapshot -c/-a/-d` on each disk. A create that fails
--   on one disk deletes the snapshot again from the disks done; a load first takes a safety
--   snapshot of every disk and rolls the disks done back to it when one fails.
-- * A running (or paused) VM is handled with QMP's snapshot-save / snapshot-load /
--   snapshot-delete jobs on its client monitor: the VM's state goes to the first disk, the
--   job is waited for (JOB_STATUS_CHANGE events), its error reported, and it is dismissed.
-- * A load on a running VM needs a snapshot with VM state: one taken while the VM was stopped
--   holds the disks only and is refused (stop the VM and load it offline). An offline load of a
--   live snapshot rolls the disks back; the saved RAM is not used (the next start boots).
-- * Each snapshot maqet takes is recorded in vm_snapshots (migration 0007). `list` reads the
--   disks and compares: snapshots found on the disks but not recorded are shown as
--   "unrecorded", records whose disk snapshot is gone as "missing", on some disks only as
--   "partial". Delete removes the record as well as whatever is left on the disks.
--
-- * The published maqet's form, `snapshot NAME create|load|list DRIVE` (snapshot.drive), works on
--   one storage entry, DRIVE being its `name`: offline, `qemu-img snapshot` on that image alone
--   (create refused while the VM runs, `overwrite` replaces a snapshot of that name on it); with
--   `live`, the running VM's snapshot jobs above (VM state and every writable qcow2 disk, as the
--   published savevm does). A per-drive snapshot is recorded with that one disk, so `list` says
--   ok for it; maqet's own load refuses it (it is not on every disk), the form's load applies it.
--
-- Failures return nil, message, code: ENOVM (no such VM), EINVAL (a bad snapshot name), EEXIST,
-- ENOSNAP (no such snapshot), EREFUSED (raw disk, no qcow2 disk, disk-only snapshot on a
-- running VM), EBUSY (starting or stopping), ETIMEDOUT (a job did not finish), EFAIL.

local vm = require("maqet.lib.vm")
local qemu = require("maqet.lib.qemu")
local storage = require("maqet.lib.storage")

local snapshot = {}

snapshot.default_timeout_s = 120
snapshot.qemu_img_timeout_ms = 300000

--- Exit statuses for the codes above (the rest as lib/vm.lua maps them).
snapshot.status_of_code = {
    EINVAL = "usage", ENOSNAP = "not_found", ENODRIVE = "not_found", EREFUSED = "refused", EEXIST = "failure",
    -- starting or stopping: refused, nothing changed, like pause/resume in the wrong state
    EBUSY = "refused",
}

--- The exit status a workflow reports for a failure code.
function snapshot.status(code)
    return snapshot.status_of_code[code] or vm.status_of_code[code] or "failure"
end

local array = maqet.json.array
local null = maqet.json.null

-- Names -----------------------------------------------------------------------------------------

--- Whether `snap` can name a snapshot: 1 to 64 letters, digits, '.', '_', '-', starting with a
--- letter (QEMU also looks snapshots up by their numeric id, so "1" would be ambiguous).
---@param snap any
---@return boolean ok
---@return string? reason
function snapshot.name_ok(snap)
    if type(snap) ~= "string" or snap == "" then return false, "a snapshot name must not be empty" end
    if #snap > 64 then
        return false, ("a snapshot name has at most 64 characters (this one has %d)"):format(#snap)
    end
    if not snap:find("^[A-Za-z][A-Za-z0-9._-]*$") then
        return false, ("snapshot name '%s' must start with a letter and contain only letters, digits, '.', '_' and '-'"):format(snap)
    end
    return true
end

--- "snap-YYYYMMDD-HHMMSS" (UTC), with "-2", "-3", … when `taken(name)` says it is used.
---@param taken fun(name: string): boolean
---@return string
function snapshot.default_name(taken)
    local base = os.date("!snap-%Y%m%d-%H%M%S")
    local name, n = base, 1
    while taken(name) do
        n = n + 1
        name = base .. "-" .. n
    end
    return name
end

-- Disks -----------------------------------------------------------------------------------------

-- Every writable qcow2 image of the VM's config ({name, file}, config order) and the first
-- writable raw image (nil when there is none).
local function scan(row)
    local disks, raw = {}, nil
    for _, disk in ipairs(qemu.config(row).storage or {}) do
        local kind = disk.type or "qcow2"
        if (kind == "qcow2" or kind == "raw") and not disk.readonly then
            if kind == "raw" then
                raw = raw or disk
            else
                disks[#disks + 1] = { name = disk.name or "?", file = disk.file }
            end
        end
    end
    return disks, raw
end

--- The disks of a VM that hold its snapshots: every writable qcow2 image in its config, in
--- config order ({name, file}). nil, message, "EREFUSED" for a writable raw disk or no qcow2 disk.
---@param row table a vm_instances row
---@return table[]|nil disks
---@return string? message
---@return string? code
function snapshot.disks(row)
    local disks, raw = scan(row)
    if raw then
        return nil, ("VM '%s': disk '%s' (%s) is a raw image, which cannot hold snapshots; nothing was changed (convert it with 'qemu-img convert -O qcow2', or mark it readonly)"):format(
            row.name, raw.name or "?", tostring(raw.file)), "EREFUSED"
    end
    if #disks == 0 then
        return nil, ("VM '%s' has no writable qcow2 disk to hold a snapshot (add a 'storage' entry of type qcow2)"):format(row.name), "EREFUSED"
    end
    return disks
end

--- A snapshot as QEMU reports it (qemu-img info or query-block) in maqet's field names.
local function from_qemu(s)
    return {
        id = s.id,
        name = s.name,
        vm_state_size = s["vm-state-size"] or 0,
        date_sec = s["date-sec"],
        vm_clock_sec = s["vm-clock-sec"],
    }
end

-- Runs qemu-img with `args`: its result, or nil and its message on one line.
local function qemu_img(args, timeout_ms)
    timeout_ms = timeout_ms or 60000
    local argv = { storage.qemu_img }
    for _, word in ipairs(args) do argv[#argv + 1] = word end
    local r, err = maqet.process.run(argv, { timeout_ms = timeout_ms })
    if not r then return nil, ("cannot run qemu-img: %s (install qemu-utils)"):format(err) end
    if r.timed_out then return nil, ("qemu-img %s did not finish within %d s"):format(args[1], timeout_ms // 1000) end
    if r.code ~= 0 then
        return nil, (((r.stderr ~= "" and r.stderr or r.stdout):gsub("%s+$", ""):gsub("\n", "; ")))
    end
    return r
end

--- The snapshots stored in the qcow2 image `file` (`qemu-img info -U`, so it also reads an
--- image a running QEMU holds). nil, message, code when it cannot be read.
---@param file string
---@return table[]|nil snapshots {id, name, vm_state_size, date_sec, vm_clock_sec}
---@return string? message
---@return string? code
function snapshot.on_disk(file)
    if not storage.exists(file) then
        return nil, ("%s does not exist (a disk is created on the VM's first 'maqet start')"):format(file), "ENOENT"
    end
    local r, err = qemu_img({ "info", "-U", "--output=json", "--", file })
    if not r then return nil, err, "EFAIL" end
    local info = maqet.json.decode(r.stdout)
    if type(info) ~= "table" then return nil, "qemu-img info printed no JSON for " .. file, "EFAIL" end
    local out = {}
    for _, s in ipairs(info.snapshots or {}) do out[#out + 1] = from_qemu(s) end
    return out
end

-- `qemu-img snapshot FLAG SNAP FILE`: true, or nil and qemu-img's message.
local function qemu_img_snapshot(flag, snap, file)
    local r, err = qemu_img({ "snapshot", flag, snap, "--", file }, snapshot.qemu_img_timeout_ms)
    return r and true, err
end

-- Whether qemu-img can open `file` without force-sharing it: nil and qemu-img's message while
-- another process, such as a running QEMU, holds the image's lock.
local function unlocked(file)
    local r, err = qemu_img({ "snapshot", "-l", "--", file })
    return r and true, err
end

local function find(list, snap)
    for _, s in ipairs(list or {}) do
        if s.name == snap then return s end
    end
    return nil
end

-- Records ---------------------------------------------------------------------------------------

--- The recorded snapshots of a VM (vm_snapshots rows, `disks` decoded), oldest first.
---@param vm_id string
---@return table[]
function snapshot.records(vm_id)
    local rows = assert(maqet.db:query("SELECT * FROM vm_snapshots WHERE vm_id = ? ORDER BY created_at, id", vm_id))
    for _, rec in ipairs(rows) do
        local disks = maqet.json.decode(rec.disks or "[]")
        rec.disks = type(disks) == "table" and disks or {}
        rec.live = rec.live == 1
    end
    return rows
end

-- Claims the name before any disk is touched: the UNIQUE(vm_id, name) constraint makes two
-- creates of one name at once end with one snapshot (qemu-img itself allows duplicate tags).
-- false when the name is already recorded.
local function claim(row, snap, live, files)
    local n = maqet.db:exec([[INSERT INTO vm_snapshots (vm_id, name, live, disks, vm_state_size)
                              VALUES (?, ?, ?, ?, 0) ON CONFLICT(vm_id, name) DO NOTHING]],
        row.id, snap, live and 1 or 0, maqet.json.encode(array(files)))
    return assert(n) > 0
end

local function record_size(row, snap, vm_state_size)
    assert(maqet.db:exec("UPDATE vm_snapshots SET vm_state_size = ? WHERE vm_id = ? AND name = ?",
        vm_state_size, row.id, snap))
end

local function forget(row, snap)
    maqet.db:transaction(function(tx)
        assert(tx:exec("DELETE FROM vm_snapshots WHERE vm_id = ? AND name = ?", row.id, snap))
    end)
end

-- The VM and where its snapshots are ------------------------------------------------------------

--- The VM's reconciled row and how to reach its disks: `live` (QEMU runs: use QMP) with an open
--- connection and the query-block entry of each disk, else the disks as files.
--- nil, message, code for no such VM, a VM in transition, or a disk QEMU does not have.
local function open(name, need_disks)
    local row, missing, missing_code = vm.get(name)
    if not row then return nil, missing, missing_code end
    name = row.name
    if row.status == "starting" or row.status == "stopping" then
        return nil, ("VM '%s' is %s; try again when it is done"):format(name, row.status), "EBUSY"
    end
    local disks, message, code
    if need_disks then
        disks, message, code = snapshot.disks(row)
        if not disks then return nil, message, code end
    else
        disks = scan(row) -- list and delete also work on a VM that has a raw disk
    end
    local ctx = { row = row, name = name, disks = disks, live = row.alive and true or false }
    if not ctx.live then
        if vm.ACTIVE[row.status] then
            return nil, ("VM '%s' says %s but its QEMU is not answering; see 'maqet status %s'"):format(name, row.status, name), "EBUSY"
        end
        return ctx
    end
    local socket = row.qmp_socket_path or qemu.paths(row).client_qmp
    local conn, err, cerr = maqet.qmp.connect(socket, { timeout_ms = 5000 })
    if not conn then
        return nil, ("VM '%s': cannot reach its QMP monitor %s: %s"):format(name, socket, err), cerr or "EFAIL"
    end
    ctx.conn = conn
    local blocks, qerr = conn:execute("query-block")
    if not blocks then
        conn:close()
        return nil, ("VM '%s': query-block failed: %s"):format(name, tostring(qerr)), "EFAIL"
    end
    for _, disk in ipairs(disks) do
        for _, b in ipairs(blocks) do
            local inserted = b.inserted
            if type(inserted) == "table" and (inserted.file == disk.file
                    or (type(inserted.image) == "table" and inserted.image.filename == disk.file)) then
                disk.node = inserted["node-name"]
                disk.snapshots = {}
                for _, s in ipairs(type(inserted.image) == "table" and inserted.image.snapshots or {}) do
                    disk.snapshots[#disk.snapshots + 1] = from_qemu(s)
                end
            end
        end
        if not disk.node then
            conn:close()
            return nil, ("VM '%s': disk '%s' (%s) is not attached to the running QEMU; nothing was changed"):format(
                name, disk.name, disk.file), "EFAIL"
        end
    end
    return ctx
end

local function close(ctx)
    if ctx and ctx.conn then ctx.conn:close(); ctx.conn = nil end
end

--- Fills disk.snapshots of a stopped VM from its image files (nil, message when one is unreadable).
local function read_disks(ctx)
    for _, disk in ipairs(ctx.disks) do
        if not disk.snapshots then
            local list, err, code = snapshot.on_disk(disk.file)
            if code == "ENOENT" then
                return nil, ("VM '%s': disk '%s' (%s) does not exist yet (it is created on the VM's first 'maqet start'); nothing was changed"):format(
                    ctx.name, disk.name, disk.file), "EREFUSED"
            end
            if not list then return nil, ("VM '%s': cannot read disk '%s': %s"):format(ctx.name, disk.name, err), "EFAIL" end
            disk.snapshots = list
        end
    end
    return true
end

--- Dismisses the snapshot jobs an earlier maqet gave up waiting for (--timeout) and that have
--- concluded since, so they do not stay in QEMU's job list for the VM's whole life.
local function dismiss_leftover_jobs(ctx)
    for _, j in ipairs(ctx.conn:execute("query-jobs") or {}) do
        if j.status == "concluded" and tostring(j.id):match("^maqet%-snapshot%-") then
            ctx.conn:execute("job-dismiss", { id = j.id })
        end
    end
end

--- Runs a snapshot job and waits for it; true, or nil, message, code. The job is dismissed.
local job_counter = 0
local function run_job(ctx, command, args, timeout_s)
    dismiss_leftover_jobs(ctx)
    job_counter = job_counter + 1
    local id = ("maqet-%s-%d-%d"):format(command, vm.self_pid() or 0, job_counter)
    args["job-id"] = id
    local deadline = maqet.now() + timeout_s
    -- QEMU runs a snapshot job in its main loop before it writes the command's reply, so the
    -- reply itself can take as long as the whole save or load: it gets the job's timeout.
    local ok, desc, code = ctx.conn:execute(command, args, { timeout_ms = math.max(1, math.floor(timeout_s * 1000)) })
    if not ok then
        if code == "ETIMEDOUT" then
            return nil, ("%s did not finish within %g s; QEMU may still complete it (see 'maqet snapshot list %s')"):format(
                command, timeout_s, ctx.name), "ETIMEDOUT"
        end
        return nil, ("%s: %s"):format(command, tostring(desc)), "EFAIL"
    end
    local done = false
    while not done do
        local left = math.floor((deadline - maqet.now()) * 1000)
        if left <= 0 then break end
        local ev, err, code = ctx.conn:next_event(left)
        if not ev then
            if code == "ETIMEDOUT" then break end
            return nil, ("%s: the QMP connection failed while waiting: %s"):format(command, tostring(err)), "EFAIL"
        end
        if ev.event == "JOB_STATUS_CHANGE" and type(ev.data) == "table" and ev.data.id == id
                and (ev.data.status == "concluded" or ev.data.status == "null") then
            done = true
        end
    end
    local jobs = ctx.conn:execute("query-jobs") or {}
    local job
    for _, j in ipairs(jobs) do if j.id == id then job = j end end
    if not done and job and job.status ~= "concluded" then
        return nil, ("%s did not finish within %g s (job %s is %s)"):format(command, timeout_s, id, tostring(job.status)), "ETIMEDOUT"
    end
    if job then ctx.conn:execute("job-dismiss", { id = id }) end
    if job and job.error then return nil, tostring(job.error), "EFAIL" end
    return true
end

local function nodes(disks)
    local out = array()
    for _, d in ipairs(disks) do out[#out + 1] = d.node end
    return out
end

local function files(disks)
    local out = array()
    for _, d in ipairs(disks) do out[#out + 1] = d.file end
    return out
end

-- List ------------------------------------------------------------------------------------------

--- The snapshots of VM `name`: what its disks hold, compared with what maqet recorded.
--- Returns {name, running, disks = {files}, snapshots = {…}} where each snapshot has
--- name, state ("ok" | "partial" | "missing" | "unrecorded"), recorded, live (VM state saved),
--- created_at (UTC "YYYY-MM-DD HH:MM:SS"), vm_state_size (bytes), disks = {{file, present}}.
---@param name string
function snapshot.list(name)
    local ctx, message, code = open(name, false)
    if not ctx then return nil, message, code end
    close(ctx)
    local unreadable = {}
    for _, disk in ipairs(ctx.disks) do
        if not disk.snapshots then
            local list, err, code = snapshot.on_disk(disk.file)
            disk.snapshots = list or {}
            -- A disk not created yet holds no snapshot; any other failure is reported.
            if not list and code ~= "ENOENT" then unreadable[#unreadable + 1] = ("%s: %s"):format(disk.file, err) end
        end
    end

    local by_name, order = {}, {}
    local function entry(snap)
        if not by_name[snap] then
            by_name[snap] = { name = snap, recorded = false, live = false, vm_state_size = 0 }
            order[#order + 1] = snap
        end
        return by_name[snap]
    end
    for _, rec in ipairs(snapshot.records(ctx.row.id)) do
        local e = entry(rec.name)
        e.recorded = true
        e.live = rec.live
        e.created_at = rec.created_at
        e.vm_state_size = rec.vm_state_size or 0
        e.recorded_disks = rec.disks
    end
    for _, disk in ipairs(ctx.disks) do
        for _, s in ipairs(disk.snapshots) do
            local e = entry(s.name)
            if s.vm_state_size > 0 then
                e.live = true
                e.vm_state_size = math.max(e.vm_state_size, s.vm_state_size)
            end
            if not e.created_at and s.date_sec then e.created_at = os.date("!%Y-%m-%d %H:%M:%S", s.date_sec) end
            e.date_sec = e.date_sec or s.date_sec
        end
    end

    local out = array()
    for _, snap in ipairs(order) do
        local e = by_name[snap]
        local present, where = 0, array()
        -- The disks to check: the VM's disks now, plus any recorded disk it no longer has.
        local seen = {}
        for _, disk in ipairs(ctx.disks) do
            seen[disk.file] = true
            local has = find(disk.snapshots, snap) ~= nil
            if has then present = present + 1 end
            where[#where + 1] = { file = disk.file, present = has }
        end
        for _, file in ipairs(e.recorded_disks or {}) do
            if not seen[file] then where[#where + 1] = { file = file, present = false } end
        end
        -- A recorded snapshot is complete when every disk it was taken on still has it (one
        -- taken on one drive by the published form, `snapshot NAME create DRIVE`, lists one disk).
        local expected = (e.recorded_disks and #e.recorded_disks > 0) and e.recorded_disks or nil
        local lacking = 0
        if expected then
            local has = {}
            for _, w in ipairs(where) do has[w.file] = w.present end
            for _, file in ipairs(expected) do if not has[file] then lacking = lacking + 1 end end
        else
            lacking = #where - present
        end
        local state
        if not e.recorded then
            state = "unrecorded"
        elseif present == 0 then
            state = "missing"
        elseif lacking > 0 then
            state = "partial"
        else
            state = "ok"
        end
        out[#out + 1] = {
            name = snap, state = state, recorded = e.recorded, live = e.live,
            created_at = e.created_at or null, vm_state_size = e.vm_state_size, disks = where,
        }
    end
    table.sort(out, function(a, b)
        local ta, tb = a.created_at ~= null and a.created_at or "", b.created_at ~= null and b.created_at or ""
        if ta ~= tb then return ta < tb end
        return a.name < b.name
    end)
    return {
        name = name,
        running = ctx.live,
        disks = files(ctx.disks),
        snapshots = out,
        unreadable = array(unreadable),
    }
end

-- Create ----------------------------------------------------------------------------------------

--- Takes snapshot `snap` (default snap-YYYYMMDD-HHMMSS) of VM `name`: of its disks when it is
--- stopped, of its disks and state when it runs. opts.timeout_s: how long the QMP job may take.
--- Returns {name, snapshot, live, disks, vm_state_size} or nil, message, code.
---@param name string
---@param snap? string
---@param opts? {timeout_s?: number}
function snapshot.create(name, snap, opts)
    opts = opts or {}
    if snap ~= nil then
        local ok, reason = snapshot.name_ok(snap)
        if not ok then return nil, reason, "EINVAL" end
    end
    local ctx, message, code = open(name, true)
    if not ctx then return nil, message, code end
    local ok, err, ecode = read_disks(ctx)
    if not ok then close(ctx); return nil, err, ecode end
    local records = {}
    for _, rec in ipairs(snapshot.records(ctx.row.id)) do records[rec.name] = true end
    local function taken(s)
        if records[s] then return true end
        for _, disk in ipairs(ctx.disks) do if find(disk.snapshots, s) then return true end end
        return false
    end
    if snap == nil then
        snap = snapshot.default_name(taken)
    elseif taken(snap) then
        close(ctx)
        return nil, ("VM '%s' already has a snapshot named '%s' (see 'maqet snapshot list %s'; delete it first or pick another name)"):format(
            name, snap, name), "EEXIST"
    end

    if not claim(ctx.row, snap, ctx.live, files(ctx.disks)) then
        close(ctx)
        return nil, ("VM '%s' already has a snapshot named '%s' (see 'maqet snapshot list %s'; delete it first or pick another name)"):format(
            name, snap, name), "EEXIST"
    end
    local vm_state_size = 0
    if ctx.live then
        local done, jerr, jcode = run_job(ctx, "snapshot-save", {
            tag = snap, vmstate = ctx.disks[1].node, devices = nodes(ctx.disks),
        }, tonumber(opts.timeout_s) or snapshot.default_timeout_s)
        if done then
            local blocks = ctx.conn:execute("query-block") or {}
            for _, b in ipairs(blocks) do
                local image = type(b.inserted) == "table" and b.inserted.image
                for _, s in ipairs(type(image) == "table" and image.snapshots or {}) do
                    if s.name == snap then vm_state_size = math.max(vm_state_size, s["vm-state-size"] or 0) end
                end
            end
        end
        close(ctx)
        if not done then
            -- A job that timed out may still finish: its record stays, so 'list' shows the truth
            -- (ok once QEMU has saved it, missing if it never does) and 'delete' can remove it.
            if jcode == "ETIMEDOUT" then
                return nil, ("VM '%s': snapshot '%s': %s; its record is kept (remove it with 'maqet snapshot delete %s %s')"):format(
                    name, snap, jerr, name, snap), jcode
            end
            forget(ctx.row, snap)
            return nil, ("VM '%s': QEMU could not save snapshot '%s': %s"):format(name, snap, jerr), jcode
        end
    else
        local done = {}
        for _, disk in ipairs(ctx.disks) do
            local created, cerr = qemu_img_snapshot("-c", snap, disk.file)
            if not created then
                for _, d in ipairs(done) do qemu_img_snapshot("-d", snap, d.file) end
                forget(ctx.row, snap)
                return nil, ("VM '%s': cannot snapshot disk '%s' (%s): %s; nothing was changed"):format(
                    name, disk.name, disk.file, cerr), "EFAIL"
            end
            done[#done + 1] = disk
        end
    end
    record_size(ctx.row, snap, vm_state_size)
    maqet.log.info(("%s: took %s snapshot '%s' of %d disk(s)"):format(name, ctx.live and "live" or "offline", snap, #ctx.disks))
    return { name = name, snapshot = snap, live = ctx.live, disks = files(ctx.disks), vm_state_size = vm_state_size }
end

-- Load ------------------------------------------------------------------------------------------

--- Puts VM `name` back to snapshot `snap`. A running VM continues from the saved state (its
--- disks and RAM); a stopped VM's disks are rolled back. Returns {name, snapshot, live} or
--- nil, message, code.
---@param name string
---@param snap string
---@param opts? {timeout_s?: number}
function snapshot.load(name, snap, opts)
    opts = opts or {}
    local ok, reason = snapshot.name_ok(snap)
    if not ok then return nil, reason, "EINVAL" end
    local ctx, message, code = open(name, true)
    if not ctx then return nil, message, code end
    local rok, rerr, rcode = read_disks(ctx)
    if not rok then close(ctx); return nil, rerr, rcode end
    local lacking, state_disk = {}, nil
    for _, disk in ipairs(ctx.disks) do
        local s = find(disk.snapshots, snap)
        if not s then lacking[#lacking + 1] = ("'%s' (%s)"):format(disk.name, disk.file) end
        if s and s.vm_state_size > 0 and not state_disk then state_disk = disk end
    end
    if #lacking == #ctx.disks then
        close(ctx)
        local recorded = maqet.db:scalar("SELECT 1 FROM vm_snapshots WHERE vm_id = ? AND name = ?", ctx.row.id, snap)
        if recorded then
            return nil, ("VM '%s': snapshot '%s' is recorded but gone from its disks (deleted outside maqet?); remove the record with 'maqet snapshot delete %s %s'"):format(
                name, snap, name, snap), "ENOSNAP"
        end
        return nil, ("VM '%s' has no snapshot named '%s' (see 'maqet snapshot list %s')"):format(name, snap, name), "ENOSNAP"
    end
    if #lacking > 0 then
        close(ctx)
        return nil, ("VM '%s': snapshot '%s' is missing from disk %s, so loading it would mix states; nothing was changed"):format(
            name, snap, table.concat(lacking, ", ")), "ENOSNAP"
    end

    if ctx.live then
        if not state_disk then
            close(ctx)
            return nil, ("VM '%s': snapshot '%s' was taken while the VM was stopped and holds no VM state; stop the VM ('maqet stop %s') and load it then"):format(
                name, snap, name), "EREFUSED"
        end
        local done, jerr, jcode = run_job(ctx, "snapshot-load", {
            tag = snap, vmstate = state_disk.node, devices = nodes(ctx.disks),
        }, tonumber(opts.timeout_s) or snapshot.default_timeout_s)
        close(ctx)
        if not done then
            return nil, (jcode == "ETIMEDOUT" and "VM '%s': snapshot '%s': %s" or "VM '%s': QEMU could not load snapshot '%s': %s"):format(
                    name, snap, jerr), jcode
        end
    else
        -- All disks or none: a safety snapshot of every disk first, so a failure part-way can put
        -- the disks already rolled back where they were.
        local undo = ("maqet-undo-%d-%d"):format(os.time(), vm.self_pid() or 0)
        local saved = {}
        local function drop_undo()
            for _, d in ipairs(saved) do qemu_img_snapshot("-d", undo, d.file) end
        end
        for _, disk in ipairs(ctx.disks) do
            local created, cerr = qemu_img_snapshot("-c", undo, disk.file)
            if not created then
                drop_undo()
                return nil, ("VM '%s': cannot prepare disk '%s' (%s) for the load: %s; nothing was changed"):format(
                    name, disk.name, disk.file, cerr), "EFAIL"
            end
            saved[#saved + 1] = disk
        end
        local applied = {}
        for _, disk in ipairs(ctx.disks) do
            local done, aerr = qemu_img_snapshot("-a", snap, disk.file)
            if not done then
                for _, d in ipairs(applied) do qemu_img_snapshot("-a", undo, d.file) end
                drop_undo()
                return nil, ("VM '%s': cannot load snapshot '%s' on disk '%s' (%s): %s; the disks were left as they were"):format(
                    name, snap, disk.name, disk.file, aerr), "EFAIL"
            end
            applied[#applied + 1] = disk
        end
        drop_undo()
    end
    maqet.log.info(("%s: loaded snapshot '%s' (%s)"):format(name, snap, ctx.live and "live" or "offline"))
    return { name = name, snapshot = snap, live = ctx.live, disks = files(ctx.disks) }
end

-- Delete ----------------------------------------------------------------------------------------

--- Deletes snapshot `snap` of VM `name` from its disks and its record. A record whose disk
--- snapshot is already gone is just removed. Returns {name, snapshot, live, disks (the disks it
--- was deleted from), record (whether a record was removed)} or nil, message, code.
---@param name string
---@param snap string
---@param opts? {timeout_s?: number}
function snapshot.delete(name, snap, opts)
    opts = opts or {}
    local ok, reason = snapshot.name_ok(snap)
    if not ok then return nil, reason, "EINVAL" end
    local ctx, message, code = open(name, false)
    if not ctx then return nil, message, code end
    local holders = {}
    for _, disk in ipairs(ctx.disks) do
        if not disk.snapshots then
            local list = snapshot.on_disk(disk.file)
            disk.snapshots = list or {}
        end
        if find(disk.snapshots, snap) then holders[#holders + 1] = disk end
    end
    local recorded = maqet.db:scalar("SELECT 1 FROM vm_snapshots WHERE vm_id = ? AND name = ?", ctx.row.id, snap) ~= nil
    if #holders == 0 and not recorded then
        close(ctx)
        return nil, ("VM '%s' has no snapshot named '%s' (see 'maqet snapshot list %s')"):format(name, snap, name), "ENOSNAP"
    end
    if #holders > 0 then
        if ctx.live then
            local done, jerr, jcode = run_job(ctx, "snapshot-delete", {
                tag = snap, devices = nodes(holders),
            }, tonumber(opts.timeout_s) or snapshot.default_timeout_s)
            close(ctx)
            if not done then
                return nil, (jcode == "ETIMEDOUT" and "VM '%s': snapshot '%s': %s" or "VM '%s': QEMU could not delete snapshot '%s': %s"):format(
                    name, snap, jerr), jcode
            end
        else
            -- A deletion cannot be undone: first make sure qemu-img can open every disk.
            for _, disk in ipairs(holders) do
                local free, lerr = unlocked(disk.file)
                if not free then
                    return nil, ("VM '%s': cannot delete snapshot '%s' from disk '%s' (%s): %s; nothing was changed"):format(
                        name, snap, disk.name, disk.file, lerr), "EFAIL"
                end
            end
            local gone = {}
            for _, disk in ipairs(holders) do
                local done, derr = qemu_img_snapshot("-d", snap, disk.file)
                if not done then
                    local prefix = #gone > 0 and ("it was deleted from %s, but "):format(table.concat(gone, ", ")) or ""
                    return nil, ("VM '%s': snapshot '%s': %scannot delete it from disk '%s' (%s): %s; the record is kept (retry 'maqet snapshot delete %s %s')"):format(
                        name, snap, prefix, disk.name, disk.file, derr, name, snap), "EFAIL"
                end
                gone[#gone + 1] = disk.file
            end
        end
    end
    close(ctx)
    forget(ctx.row, snap)
    maqet.log.info(("%s: deleted snapshot '%s' from %d disk(s)"):format(name, snap, #holders))
    return { name = name, snapshot = snap, live = ctx.live, disks = files(holders), record = recorded }
end

-- The published form: one drive -------------------------------------------------------------------

--- The storage entry named `drive` in the VM's config, or nil, message, "ENODRIVE".
local function find_drive(row, drive)
    local names = {}
    for _, disk in ipairs(qemu.config(row).storage or {}) do
        if disk.name == drive then return disk end
        names[#names + 1] = tostring(disk.name or "?")
    end
    return nil, ("VM '%s' has no drive named '%s' (a drive is a storage entry's name; %s)"):format(
        row.name, tostring(drive), #names > 0 and ("its drives: " .. table.concat(names, ", ")) or "it has none"), "ENODRIVE"
end

-- Records a snapshot taken on one disk: a new record lists that disk; an existing one (the same
-- name taken on another drive) gains it.
local function record_drive(row, snap, file)
    maqet.db:transaction(function(tx)
        local rec = assert(tx:query("SELECT disks FROM vm_snapshots WHERE vm_id = ? AND name = ?", row.id, snap))[1]
        if not rec then
            assert(tx:exec("INSERT INTO vm_snapshots (vm_id, name, live, disks, vm_state_size) VALUES (?, ?, 0, ?, 0)",
                row.id, snap, maqet.json.encode(array({ file }))))
            return
        end
        local disks = maqet.json.decode(rec.disks or "[]")
        disks = type(disks) == "table" and disks or array()
        local known = false
        for _, f in ipairs(disks) do if f == file then known = true end end
        if not known then disks[#disks + 1] = file end
        assert(tx:exec("UPDATE vm_snapshots SET disks = ?, created_at = CURRENT_TIMESTAMP WHERE vm_id = ? AND name = ?",
            maqet.json.encode(array(disks)), row.id, snap))
    end)
end

local function names_of(list)
    local out = {}
    for _, s in ipairs(list or {}) do out[#out + 1] = s.name end
    return out
end

--- The published maqet's form: `action` ("create", "load", "list") on drive `drive` (a storage
--- entry's name) of VM `name`. opts: live (through QMP: VM state and every writable qcow2 disk),
--- overwrite (create: replace a snapshot of that name), timeout_s. Returns {name, drive, file,
--- snapshot, live, method, overwritten} (list: {name, drive, file, running, snapshots = {names}})
--- or nil, message, code.
---@param name string
---@param action "create"|"load"|"list"
---@param drive string
---@param snap? string
---@param opts? {live?: boolean, overwrite?: boolean, timeout_s?: number}
function snapshot.drive(name, action, drive, snap, opts)
    opts = opts or {}
    if action ~= "create" and action ~= "load" and action ~= "list" then
        return nil, ("snapshot: unknown action '%s' (create, load or list in 'maqet snapshot NAME ACTION DRIVE'; delete is 'maqet snapshot delete NAME SNAP')"):format(
            tostring(action)), "EINVAL"
    end
    if type(drive) ~= "string" or drive == "" then
        return nil, ("snapshot %s: name the drive (a storage entry's name): 'maqet snapshot %s %s DRIVE --name SNAP'"):format(
            action, name, action), "EINVAL"
    end
    if snap ~= nil then
        local ok, reason = snapshot.name_ok(snap)
        if not ok then return nil, reason, "EINVAL" end
    elseif action == "load" then
        return nil, ("snapshot load: name the snapshot: 'maqet snapshot %s load %s --name SNAP'"):format(name, drive), "EINVAL"
    end
    local row = vm.get(name)
    if not row then return nil, ("no VM named '%s' (see 'maqet ls')"):format(name), "ENOVM" end
    name = row.name
    local disk, message, code = find_drive(row, drive)
    if not disk then return nil, message, code end
    local kind = disk.type or "qcow2"
    if kind ~= "qcow2" then
        return nil, ("VM '%s': drive '%s' is a %s %s, which cannot hold snapshots; nothing was changed"):format(
            name, drive, kind, kind == "virtfs" and "share" or "image"), "EREFUSED"
    end
    if row.status == "starting" or row.status == "stopping" then
        return nil, ("VM '%s' is %s; try again when it is done"):format(name, row.status), "EBUSY"
    end
    local running = row.alive and true or false

    if action == "list" then
        -- qemu-img info -U reads the image whether or not a QEMU holds it.
        local list, lerr, lcode = snapshot.on_disk(disk.file)
        if not list and lcode ~= "ENOENT" then return nil, ("VM '%s': cannot read drive '%s': %s"):format(name, drive, lerr), "EFAIL" end
        return { name = name, drive = drive, file = disk.file, running = running, snapshots = array(names_of(list)) }
    end

    if opts.live then
        if not running then
            return nil, ("VM '%s' is not running; --live works on a running VM (without --live, %s works on drive '%s' offline)"):format(
                name, action, drive), "EREFUSED"
        end
        local overwritten = false
        if action == "create" and snap ~= nil and opts.overwrite then
            local deleted, derr, dcode = snapshot.delete(name, snap, opts)
            if deleted then overwritten = true elseif dcode ~= "ENOSNAP" then return nil, derr, dcode end
        end
        local result, rerr, rcode = (action == "create" and snapshot.create or snapshot.load)(name, snap, opts)
        if not result then return nil, rerr, rcode end
        result.drive, result.file, result.method, result.overwritten = drive, disk.file, "qmp", overwritten
        return result
    end

    if running then
        return nil, ("VM '%s' is running: %s on drive '%s' alone needs it stopped ('maqet stop %s'); --live %s the VM's state and all its disks"):format(
            name, action, drive, name, action == "create" and "saves" or "loads"), "EREFUSED"
    end
    local list, lerr, lcode = snapshot.on_disk(disk.file)
    if lcode == "ENOENT" then
        return nil, ("VM '%s': drive '%s' (%s) does not exist yet (it is created on the VM's first 'maqet start'); nothing was changed"):format(
            name, drive, disk.file), "EREFUSED"
    end
    if not list then return nil, ("VM '%s': cannot read drive '%s': %s"):format(name, drive, lerr), "EFAIL" end
    local free, ferr = unlocked(disk.file)
    if not free then
        return nil, ("VM '%s': drive '%s' (%s): %s; nothing was changed"):format(name, drive, disk.file, ferr), "EFAIL"
    end

    if action == "load" then
        if not find(list, snap) then
            local have = names_of(list)
            return nil, ("drive '%s' of VM '%s' has no snapshot named '%s' (%s)"):format(drive, name, snap,
                #have > 0 and ("it has: " .. table.concat(have, ", ")) or "it has none"), "ENOSNAP"
        end
        local done, aerr = qemu_img_snapshot("-a", snap, disk.file)
        if not done then
            return nil, ("VM '%s': cannot load snapshot '%s' on drive '%s' (%s): %s"):format(name, snap, drive, disk.file, aerr), "EFAIL"
        end
        maqet.log.info(("%s: loaded snapshot '%s' on drive '%s'"):format(name, snap, drive))
        return { name = name, drive = drive, file = disk.file, snapshot = snap, live = false, method = "qemu-img", overwritten = false }
    end

    if snap == nil then
        snap = snapshot.default_name(function(s)
            return find(list, s) ~= nil or maqet.db:scalar("SELECT 1 FROM vm_snapshots WHERE vm_id = ? AND name = ?", row.id, s) ~= nil
        end)
    end
    local exists = find(list, snap) ~= nil
    if exists and not opts.overwrite then
        return nil, ("drive '%s' of VM '%s' already has a snapshot named '%s' (add --overwrite to replace it)"):format(drive, name, snap), "EEXIST"
    end
    if exists then
        local gone, derr = qemu_img_snapshot("-d", snap, disk.file)
        if not gone then
            return nil, ("VM '%s': cannot replace snapshot '%s' on drive '%s' (%s): %s; nothing was changed"):format(
                name, snap, drive, disk.file, derr), "EFAIL"
        end
    end
    local created, cerr = qemu_img_snapshot("-c", snap, disk.file)
    if not created then
        return nil, ("VM '%s': cannot snapshot drive '%s' (%s): %s%s"):format(name, drive, disk.file, cerr,
            exists and "; the snapshot it replaced was already deleted" or "; nothing was changed"), "EFAIL"
    end
    record_drive(row, snap, disk.file)
    maqet.log.info(("%s: took snapshot '%s' of drive '%s'"):format(name, snap, drive))
    return { name = name, drive = drive, file = disk.file, snapshot = snap, live = false, method = "qemu-img",
             overwritten = exists, disks = array({ disk.file }), vm_state_size = 0 }
end

-- One entry point -------------------------------------------------------------------------------

snapshot.ACTIONS = { create = snapshot.create, list = snapshot.list, load = snapshot.load, delete = snapshot.delete }

--- maqet.vm.snapshot(name, action, snap, opts): action is "create", "list", "load" or "delete".
function snapshot.run(name, action, snap, opts)
    if type(name) ~= "string" or name == "" then
        error("maqet.vm.snapshot: name must be a VM name", 2)
    end
    local fn = snapshot.ACTIONS[action]
    if not fn then
        error(("maqet.vm.snapshot: action must be create, list, load or delete, got %s"):format(tostring(action)), 2)
    end
    if action == "list" then return fn(name) end
    if action ~= "create" and snap == nil then
        return nil, ("snapshot %s: a snapshot name is required"):format(action), "EINVAL"
    end
    return fn(name, snap, opts)
end

return snapshot
