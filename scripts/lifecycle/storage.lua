-- maqet storage verify NAME | orphaned | attach NAME PATH [--drive D] [--interface I] [--readonly]
--
-- verify: each storage entry of the VM's config: does its file exist, is it the format the
--   config says (qemu-img info -U), and, for a qcow2 image of a VM that is not running, is it
--   consistent (qemu-img check: corruptions, leaks). A disk with a `size` that does not exist yet
--   is "not_created" (its first start makes it), which is not a problem. Images recorded in
--   storage_registry that the config no longer names are listed too.
-- orphaned: disk images (*.qcow2, *.qcow, *.img, *.raw) anywhere under the data directory that no
--   VM's config names and storage_registry does not record, with their sizes.
-- attach: adds an existing image to a stopped VM's config (a storage entry, so the VM boots from
--   it) and records it in storage_registry as 'attached', which `rm --delete-storage` never
--   deletes. Takes a backup of the state first, so `maqet db restore` undoes it.
local vm = require("maqet.lib.vm")
local storage = require("maqet.lib.storage")
local config = require("maqet.lib.config")
local status = require("maqet.lib.status")

local array = maqet.json.array
local null = maqet.json.null

local IMAGE_SUFFIXES = { ".qcow2", ".qcow", ".img", ".raw" }

local function is_image_name(path)
    local lower = path:lower()
    for _, suffix in ipairs(IMAGE_SUFFIXES) do
        if lower:sub(-#suffix) == suffix then return true end
    end
    return false
end

-- `qemu-img check` of a qcow2 image: {ok, corruptions, leaks, message}.
local function check(file)
    local r, err = maqet.process.run({ storage.qemu_img, "check", "--output=json", "--", file }, { timeout_ms = 300000 })
    if not r then return { ok = false, message = "cannot run qemu-img: " .. tostring(err) } end
    local info = maqet.json.decode(r.stdout)
    if type(info) ~= "table" then
        return { ok = false, message = ((r.stderr ~= "" and r.stderr or r.stdout):gsub("%s+$", ""):gsub("\n", "; ")) }
    end
    local corruptions, leaks = info.corruptions or 0, info.leaks or 0
    return { ok = corruptions == 0 and leaks == 0 and (info["check-errors"] or 0) == 0,
             corruptions = corruptions, leaks = leaks, message = null }
end

local actions = {}

function actions.verify(args)
    local row, message, code = vm.get(args.name)
    if not row then vm.check(nil, message, code) end
    local running = row.alive and true or false
    local disks, named = array(), {}
    local all_ok = true
    for _, disk in ipairs(row.config.storage or {}) do
        local kind = disk.type or "qcow2"
        local entry = { name = disk.name or null, type = kind, in_config = true }
        if kind == "virtfs" then
            local path = disk.path or disk.file
            local st = path and maqet.fs.stat(path)
            entry.path = path or null
            entry.exists = st ~= nil and st.type == "directory"
            entry.state = entry.exists and "ok" or "missing"
        else
            local file = disk.file
            entry.file = file or null
            named[file or ""] = true
            local st = file and maqet.fs.stat(file)
            entry.exists = st ~= nil
            entry.check = null
            if not st then
                entry.state = disk.size ~= nil and "not_created" or "missing"
            else
                local info, ierr = storage.image_info(file)
                if not info then
                    entry.state, entry.message = "unreadable", ierr
                else
                    entry.format, entry.virtual_size, entry.actual_size = info.format, info.virtual_size, info.actual_size or null
                    if info.format ~= kind then
                        entry.state = "wrong_format"
                        entry.message = ("the config says %s, the image is %s"):format(kind, tostring(info.format))
                    elseif kind == "qcow2" and running then
                        entry.state = "ok"
                        entry.message = "not checked: the VM is running (stop it for qemu-img check)"
                    elseif kind == "qcow2" then
                        entry.check = check(file)
                        entry.state = entry.check.ok and "ok" or "damaged"
                    else
                        entry.state = "ok"
                    end
                end
            end
        end
        if entry.state ~= "ok" and entry.state ~= "not_created" then all_ok = false end
        disks[#disks + 1] = entry
    end
    local registered = {}
    for _, rec in ipairs(storage.registry(row.name)) do
        registered[rec.storage_path] = rec
        if not named[rec.storage_path] then
            local st = maqet.fs.stat(rec.storage_path)
            disks[#disks + 1] = { name = null, type = rec.storage_type, file = rec.storage_path, in_config = false,
                                  exists = st ~= nil, state = "not_in_config", check = null,
                                  message = "recorded for the VM, but its config does not name it" }
        end
    end
    for _, entry in ipairs(disks) do
        local rec = entry.file and registered[entry.file]
        entry.recorded = rec and rec.storage_type or null
        entry.deleted_by_rm = rec and rec.created or false
    end
    return { name = row.name, running = running, ok = all_ok, disks = disks }
end

function actions.orphaned()
    local data = maqet.data_dir()
    local used = {}
    for _, row in ipairs(assert(maqet.db:query("SELECT name, config_data FROM vm_instances"))) do
        local ok, cfg = pcall(config.decode, row.config_data)
        for _, disk in ipairs(ok and type(cfg) == "table" and cfg.storage or {}) do
            if disk.file then used[maqet.fs.realpath(disk.file) or disk.file] = true end
        end
    end
    for _, rec in ipairs(assert(maqet.db:query("SELECT storage_path FROM storage_registry"))) do
        used[maqet.fs.realpath(rec.storage_path) or rec.storage_path] = true
    end
    local r, err = maqet.process.run({ "find", data, "-type", "f", "-printf", "%s\t%b\t%p\\0" }, { timeout_ms = 120000 })
    if not r then maqet.error("cannot list the data directory: " .. tostring(err), "failure") end
    local images, total = array(), 0
    for size, blocks, path in r.stdout:gmatch("(%d+)\t(%d+)\t([^%z]+)%z") do
        if is_image_name(path) and not used[maqet.fs.realpath(path) or path] then
            local bytes = math.tointeger(tonumber(size))
            images[#images + 1] = { path = path, size_bytes = bytes, allocated_bytes = math.tointeger(tonumber(blocks) * 512) }
            total = total + bytes
        end
    end
    table.sort(images, function(a, b) return a.path < b.path end)
    return { data_dir = data, images = images, total_bytes = total }
end

function actions.attach(args)
    local row, message, code = vm.get(args.name)
    if not row then vm.check(nil, message, code) end
    if status.is_active(row.status) then
        maqet.error(("VM '%s' is %s; stop it first (maqet stop %s), then attach the image"):format(row.name, row.status, row.name), "refused")
    end
    local path = args.path
    if type(path) ~= "string" or path == "" then maqet.error("storage attach: name the image to attach", "usage") end
    path = config.absolute(path, maqet.fs.cwd())
    local st = maqet.fs.stat(path)
    if not st or st.type ~= "file" then
        maqet.error(("storage attach: %s %s; attach an existing disk image (create one with 'qemu-img create -f qcow2 FILE SIZE')"):format(
            path, st and ("is a " .. st.type) or "does not exist"), "usage")
    end
    local info, ierr = storage.image_info(path)
    if not info then maqet.error(("storage attach: %s is not a readable disk image: %s"):format(path, ierr), "usage") end
    if info.format ~= "qcow2" and info.format ~= "raw" then
        maqet.error(("storage attach: %s is a %s image; maqet runs qcow2 and raw images (convert it with 'qemu-img convert -O qcow2 %s NEW.qcow2')"):format(
            path, tostring(info.format), path), "usage")
    end
    -- Any file reads as a raw image; one that is not a whole number of 512-byte sectors is
    -- not a disk (a text file, a truncated download).
    if info.format == "raw" and (st.size == 0 or st.size % 512 ~= 0) then
        maqet.error(("storage attach: %s is not a disk image (%d bytes, not a whole number of 512-byte sectors)"):format(
            path, st.size), "usage")
    end
    local cfg = row.config or {}
    local entries = cfg.storage or array()
    local drive = args.drive
    if drive == nil or drive == null then
        drive = (path:match("([^/]+)$") or "disk"):gsub("%.[^.]*$", ""):gsub("[^%w_-]", "_")
    end
    for _, disk in ipairs(entries) do
        if disk.file and (maqet.fs.realpath(disk.file) or disk.file) == (maqet.fs.realpath(path) or path) then
            maqet.error(("VM '%s' already uses %s (drive '%s')"):format(row.name, path, tostring(disk.name)), "failure")
        end
        if disk.name == drive then
            maqet.error(("VM '%s' already has a drive named '%s'; name this one with --drive NAME"):format(row.name, drive), "usage")
        end
    end
    local entry = { name = drive, type = info.format, file = path }
    if args.interface ~= nil and args.interface ~= null then entry.interface = args.interface end
    if args.readonly == true then entry.readonly = true end
    local new = {}
    for k, v in pairs(cfg) do new[k] = v end
    local list = array()
    for _, disk in ipairs(entries) do list[#list + 1] = disk end
    list[#list + 1] = entry
    new.storage = list
    new = config.validate(new)

    local backup, berr = maqet.backup_state()
    if not backup then maqet.error(("not changed: the backup before attach failed: %s"):format(berr)) end
    maqet.db:transaction(function(tx)
        local n = assert(tx:exec(("UPDATE vm_instances SET config_data = ?, updated_at = CURRENT_TIMESTAMP WHERE id = ? AND status NOT IN %s"):format(
            status.sql_list(status.active_list())), config.encode(new), row.id))
        if n == 0 then maqet.error(("VM '%s' started or was removed meanwhile; nothing was changed"):format(row.name), "failure") end
        assert(tx:exec([[INSERT INTO storage_registry (vm_name, storage_path, storage_type, size_bytes, last_verified)
                         VALUES (?, ?, ?, ?, CURRENT_TIMESTAMP) ON CONFLICT(vm_name, storage_path) DO NOTHING]],
            row.name, path, storage.ATTACHED_TYPE, st.size))
    end)
    vm.log(row, ("attached %s image %s as drive '%s' (maqet storage attach)"):format(info.format, path, drive))
    return { name = row.name, drive = drive, file = path, format = info.format, virtual_size = info.virtual_size, backup = backup }
end

return {
    description = "Check a VM's disks, list disk images no VM uses, or attach an existing image to a VM",
    run = function(args)
        local fn = actions[args.action]
        if not fn then maqet.error(("storage: unknown action '%s' (verify, orphaned or attach)"):format(tostring(args.action)), "usage") end
        return fn(args)
    end,
}
