-- maqet reset NAME: a hard reset (QMP `system_reset`, the reset button: the guest is not asked
-- to shut down, unsaved data in it is lost) of a running or paused VM. The status is unchanged;
-- the runner logs QEMU's RESET event in the VM's history (lib/vm.lua vm.reset).
local vm = require("maqet.lib.vm")

return {
    description = "Hard-reset a running VM (QMP system_reset)",
    run = function(args)
        if type(args.name) ~= "string" or args.name == "" then maqet.error("reset: a VM name is required", "usage") end
        return vm.check(vm.reset(args.name))
    end,
}
