-- maqet resume NAME: QMP `cont` on a paused VM. The row says running once the runner has recorded
-- QEMU's RESUME event (lib/vm.lua vm.resume). Refused (nothing changed) for a VM that is not paused.
local vm = require("maqet.lib.vm")

return {
    description = "Resume a paused VM (QMP cont)",
    run = function(args)
        if type(args.name) ~= "string" or args.name == "" then maqet.error("resume: a VM name is required", "usage") end
        return vm.check(vm.resume(args.name))
    end,
}
