-- Disk images of VMs: created on first start, recorded in storage_registry, deleted by
-- `maqet rm --delete-storage`.
--
-- Policy:
-- * A qcow2/raw entry whose `file` is missing and that has a `size` is created with
--   `qemu-img create -f TYPE [-b BACKING -F FMT] FILE SIZE` and recorded in storage_registry.
-- * A missing file without a `size` is an error (nothing to create it from). A missing folder
--   for a new image is created.
-- * A file that already exists is used as it is and NOT recorded: maqet only ever deletes disk
--   images it created itself, so `rm --delete-storage` never removes an image you brought.
-- * virtfs shares are never created, recorded or deleted.
-- * `maqet storage attach` records an image you brought with storage_type 'attached' (the
--   published maqet's own attach recorded 'disk'): such rows say the VM uses the image, and
--   `rm --delete-storage` never deletes them. Only the types in storage.CREATED_TYPES (the
--   images maqet created) are ever deleted.

local storage = {}

storage.qemu_img = "qemu-img"

local function exists(path)
    local f = io.open(path, "rb")
    if f then f:close(); return true end
    -- io.open fails on unreadable files too; os.rename(p, p) succeeds for anything that exists.
    return os.rename(path, path) == true
end
storage.exists = exists

--- Creates the missing disk images of `vm` (a vm_instances row) and records them.
--- Returns the list of files created; raises maqet.error with qemu-img's own message on failure.
---@param vm table
---@param config table the decoded config
---@return string[] created
function storage.prepare(vm, config)
    local created = {}
    for _, disk in ipairs(config.storage or {}) do
        local kind = disk.type or "qcow2"
        if (kind == "qcow2" or kind == "raw") and disk.file and not exists(disk.file) then
            if disk.size == nil then
                maqet.error(("VM '%s': disk '%s' (%s) does not exist and has no 'size' to create it with"):format(
                    vm.name, disk.name or "?", disk.file), "failure")
            end
            local parent = disk.file:match("^(.*)/[^/]*$")
            if parent and parent ~= "" and not exists(parent) then
                local r = maqet.process.run({ "mkdir", "-p", "--", parent })
                if not r or r.code ~= 0 then
                    maqet.error(("VM '%s': cannot create the folder %s for disk %s: %s"):format(
                        vm.name, parent, disk.file, r and r.stderr:gsub("%s+$", "") or "mkdir failed"), "failure")
                end
            end
            local argv = { storage.qemu_img, "create", "-q", "-f", kind }
            if disk.backing_file then
                argv[#argv + 1] = "-b"; argv[#argv + 1] = disk.backing_file
                argv[#argv + 1] = "-F"; argv[#argv + 1] = disk.backing_format or "qcow2"
            end
            argv[#argv + 1] = disk.file
            argv[#argv + 1] = tostring(disk.size)
            local r, err = maqet.process.run(argv, { timeout_ms = 60000 })
            if not r then
                maqet.error(("VM '%s': cannot create disk %s: %s (install qemu-utils)"):format(vm.name, disk.file, err), "failure")
            end
            if r.code ~= 0 then
                local text = (r.stderr ~= "" and r.stderr or r.stdout):gsub("%s+$", ""):gsub("\n", "; ")
                maqet.error(("VM '%s': qemu-img could not create disk %s: %s"):format(vm.name, disk.file, text), "failure")
            end
            maqet.db:transaction(function(tx)
                assert(tx:exec([[INSERT INTO storage_registry (vm_name, storage_path, storage_type, size_bytes)
                                 VALUES (?, ?, ?, ?)
                                 ON CONFLICT(vm_name, storage_path) DO UPDATE SET
                                   storage_type = excluded.storage_type, size_bytes = excluded.size_bytes,
                                   last_verified = CURRENT_TIMESTAMP]],
                    -- config.lua owns the size grammar; required here, not at the top, so a start
                    -- that creates no disk does not compile it (about 1 ms).
                    vm.name, disk.file, kind, (require("maqet.lib.config").size_bytes(disk.size))))
            end)
            maqet.log.info(("created %s disk %s (%s)"):format(kind, disk.file, tostring(disk.size)))
            created[#created + 1] = disk.file
        end
    end
    return created
end

--- The storage_registry types of images maqet created itself (the only ones it deletes).
storage.CREATED_TYPES = { qcow2 = true, raw = true }

--- The registry type of an image attached with `maqet storage attach` (never deleted).
storage.ATTACHED_TYPE = "attached"

--- The disk images maqet created for a VM (recorded in storage_registry with a type in
--- storage.CREATED_TYPES), in the order they were created: what `rm --delete-storage` deletes.
---@param vm_name string
---@return string[]
function storage.files(vm_name)
    local files = {}
    for _, row in ipairs(assert(maqet.db:query(
        "SELECT storage_path, storage_type FROM storage_registry WHERE vm_name = ? ORDER BY id", vm_name))) do
        if storage.CREATED_TYPES[row.storage_type] then files[#files + 1] = row.storage_path end
    end
    return files
end

--- Every storage_registry row of a VM ({storage_path, storage_type, size_bytes, created}), in
--- order; `created` says maqet made the image (and `rm --delete-storage` would delete it).
---@param vm_name string
---@return table[]
function storage.registry(vm_name)
    local rows = assert(maqet.db:query(
        "SELECT storage_path, storage_type, size_bytes FROM storage_registry WHERE vm_name = ? ORDER BY id", vm_name))
    for _, row in ipairs(rows) do row.created = storage.CREATED_TYPES[row.storage_type] == true end
    return rows
end

--- What `qemu-img info -U` says of an image: {format, virtual_size, actual_size, backing_file}
--- or nil, message. -U: also an image a running QEMU holds.
---@param file string
function storage.image_info(file)
    local r, err = maqet.process.run({ storage.qemu_img, "info", "-U", "--output=json", "--", file }, { timeout_ms = 60000 })
    if not r then return nil, ("cannot run qemu-img: %s (install qemu-utils)"):format(err) end
    if r.code ~= 0 then return nil, ((r.stderr ~= "" and r.stderr or r.stdout):gsub("%s+$", ""):gsub("\n", "; ")) end
    local info = maqet.json.decode(r.stdout)
    if type(info) ~= "table" then return nil, "qemu-img info printed no JSON" end
    return {
        format = info.format, virtual_size = info["virtual-size"], actual_size = info["actual-size"],
        backing_file = info["backing-filename"],
    }
end

--- Deletes the recorded disk images of a VM (the registry rows go with the VM row).
--- Returns the files deleted and the failures ({path, error}); a file already gone counts as deleted.
---@param vm_name string
---@param files? string[] default storage.files(vm_name)
---@return string[] deleted, table[] failed
function storage.delete(vm_name, files)
    local deleted, failed = {}, {}
    for _, path in ipairs(files or storage.files(vm_name)) do
        local ok, err = os.remove(path)
        if ok or not exists(path) then
            deleted[#deleted + 1] = path
        else
            failed[#failed + 1] = { path = path, error = err }
        end
    end
    return deleted, failed
end

return storage
