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

--- The disk images recorded for a VM, in the order they were created.
---@param vm_name string
---@return string[]
function storage.files(vm_name)
    local files = {}
    for _, row in ipairs(assert(maqet.db:query(
        "SELECT storage_path FROM storage_registry WHERE vm_name = ? ORDER BY id", vm_name))) do
        files[#files + 1] = row.storage_path
    end
    return files
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
