-- Makes vm_instances tell the truth: every row in an active status (lib/status.lua) is checked against its
-- QEMU process (pid alive and its command line naming the VM's QMP socket) and its runner; dead
-- VMs are recorded stopped or crashed and their runtime files removed (see lib/vm.lua).
-- `maqet ls` runs this first whenever a row is in an active status.
local vm = require("maqet.lib.vm")

return {
    description = "Record the true state of VMs whose rows say running",
    run = function()
        local changed, runners = vm.reconcile_all()
        -- runners: {name = "missing"|"python-maqet"} for VMs running without maqet's own runner
        -- (`maqet ls` notes them in its table).
        return { changed = maqet.json.array(changed), runners = runners }
    end,
}
