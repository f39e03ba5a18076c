-- maqet snapshot create|list|load|delete NAME [SNAP] [--timeout S], and the published maqet's
-- form maqet snapshot NAME create|load|list DRIVE --name SNAP [--live] [--overwrite] (args.drive
-- set: lib/snapshot.lua snapshot.drive, one storage entry offline; --live through QMP).
-- The steps are in lib/snapshot.lua: a stopped VM's qcow2 disks are changed with qemu-img
-- (all disks or none), a running VM's with QMP snapshot jobs (VM state plus every writable qcow2
-- disk); raw disks and VMs without a qcow2 disk are refused; every snapshot taken is recorded in
-- vm_snapshots, and `list` compares the records with what the disks really hold.
local snapshot = require("maqet.lib.snapshot")

return {
    description = "Create, list, load or delete the snapshots of a VM",
    run = function(args)
        if type(args.name) ~= "string" or args.name == "" then
            maqet.error("snapshot: a VM name is required", "usage")
        end
        if args.drive ~= nil then
            local result, message, code = snapshot.drive(args.name, args.action, args.drive, args.snapshot, {
                live = args.live == true, overwrite = args.overwrite == true, timeout_s = args.timeout,
            })
            if result == nil then maqet.error(message or "failed", snapshot.status(code)) end
            return result
        end
        if not snapshot.ACTIONS[args.action] then
            maqet.error(("snapshot: unknown action '%s' (create, list, load or delete)"):format(tostring(args.action)), "usage")
        end
        local result, message, code = snapshot.run(args.name, args.action, args.snapshot, { timeout_s = args.timeout })
        if result == nil then maqet.error(message or "failed", snapshot.status(code)) end
        return result
    end,
}
