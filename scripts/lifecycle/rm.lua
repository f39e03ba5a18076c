-- maqet rm NAME|--all [--force] [--yes] [--delete-storage [--keep-snapshots]]
-- 1. Refuses a running VM unless --force.
-- 2. --all asks "Remove N VMs? [y/N]" on a terminal unless --yes; without a terminal it needs --yes.
-- 3. With --force, kills the running VMs and waits until they have exited.
-- 4. Takes an automatic verified backup of the state (maqet db restore undoes the removal).
-- 5. Deletes the rows (and their storage_registry entries) in one transaction.
-- 6. Deletes their logs in the data directory (history, events, console: qemu.data_files), so a
--    VM added later under the same name starts with none of the removed VM's output.
-- 7. --delete-storage then deletes the disk images maqet created for them (storage_registry)
--    and lists them; images you brought yourself are never recorded, so never deleted. With
--    --keep-snapshots, an image holding internal snapshots is kept (and listed as kept).
local vm = require("maqet.lib.vm")
local qemu = require("maqet.lib.qemu")
local storage = require("maqet.lib.storage")

return {
    description = "Remove VMs (refusing running ones without --force), optionally with their disks",
    run = function(args)
        local rows
        if args.all then
            rows = vm.list()
        else
            if type(args.name) ~= "string" or args.name == "" then
                maqet.error("rm: give a VM name or --all", "usage")
            end
            rows = { vm.check(vm.get(args.name)) }
        end
        if #rows == 0 then return { removed = maqet.json.array(), deleted_files = maqet.json.array() } end

        local running = {}
        for _, row in ipairs(rows) do
            if vm.ACTIVE[row.status] then running[#running + 1] = row end
        end
        if #running > 0 and not args.force then
            local names = {}
            for _, row in ipairs(running) do names[#names + 1] = ("'%s'"):format(row.name) end
            if #names == 1 then
                maqet.error(("VM %s is running; stop it first (maqet stop %s) or use --force"):format(
                    names[1], running[1].name), "refused")
            end
            maqet.error(("VMs %s are running; stop them first (maqet stop --all) or use --force"):format(
                table.concat(names, ", ")), "refused")
        end
        local question = ("Remove %d VM%s?"):format(#rows, #rows == 1 and "" or "s")
        if args.all and not vm.confirm(question, { granted = args.yes, interactive = args.interactive, how = "add --yes" }) then
            maqet.error("nothing removed", "refused")
        end

        if #running > 0 then
            for _, r in ipairs(vm.stop_rows(running, { force = true })) do
                if r.error then maqet.error(("VM '%s' %s; nothing removed"):format(r.name, r.error), "failure") end
            end
        end

        -- The backup is taken after --force has stopped the VMs (so a restore brings them back as
        -- stopped, which is the truth) and before anything is deleted.
        local backup, backup_error = maqet.backup_state()
        if not backup then
            maqet.error("nothing removed: the automatic backup of the state failed: " .. tostring(backup_error), "failure")
        end

        -- --keep-snapshots: an image that holds internal snapshots (qemu-img info) is not deleted
        -- with --delete-storage; it stays where it is and is reported as kept.
        local files, kept = {}, maqet.json.array()
        if args.delete_storage then
            for _, row in ipairs(rows) do
                files[row.name] = storage.files(row.name)
                if args.keep_snapshots then
                    local doomed = {}
                    for _, path in ipairs(files[row.name]) do
                        local snaps = require("maqet.lib.snapshot").on_disk(path)
                        if snaps and #snaps > 0 then kept[#kept + 1] = path else doomed[#doomed + 1] = path end
                    end
                    files[row.name] = doomed
                end
            end
        end
        local removed = maqet.json.array()
        maqet.db:transaction(function(tx)
            for _, row in ipairs(rows) do
                assert(tx:exec("DELETE FROM vm_instances WHERE id = ?", row.id))
                removed[#removed + 1] = row.name
            end
        end)

        local deleted, failed = maqet.json.array(), {}
        for _, row in ipairs(rows) do
            for _, path in ipairs(qemu.data_files(row)) do
                local ok, err, errno = os.remove(path)
                if not ok and errno ~= 2 then failed[#failed + 1] = tostring(err) end
            end
        end
        if args.delete_storage then
            for _, row in ipairs(rows) do
                local ok, bad = storage.delete(row.name, files[row.name])
                for _, path in ipairs(ok) do deleted[#deleted + 1] = path end
                for _, f in ipairs(bad) do failed[#failed + 1] = f.path .. ": " .. tostring(f.error) end
            end
        end
        if #failed > 0 then
            maqet.error("removed " .. table.concat(removed, ", ") .. " but could not delete: " .. table.concat(failed, "; "), "failure")
        end
        return { removed = removed, deleted_files = deleted, kept_files = kept, backup = backup or maqet.json.null }
    end,
}
