-- maqet pause NAME: QMP `stop` on a running VM (its CPUs stop; QEMU, its memory and devices stay).
-- The row says paused once the runner has recorded QEMU's STOP event (lib/vm.lua vm.pause).
-- Refused (nothing changed) for a VM that is not running or already paused.
local vm = require("maqet.lib.vm")

return {
    description = "Pause a running VM (QMP stop)",
    run = function(args)
        if type(args.name) ~= "string" or args.name == "" then maqet.error("pause: a VM name is required", "usage") end
        return vm.check(vm.pause(args.name))
    end,
}
