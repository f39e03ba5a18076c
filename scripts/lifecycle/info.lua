-- maqet info NAME: the VM's id, name, config file and config (as an object), and the config
-- summary the published maqet printed (`configuration`: binary, memory, cpu, display, disks).
-- The steps are lib/inspect.lua.
local vm = require("maqet.lib.vm")
local inspect = require("maqet.lib.inspect")

return {
    description = "Show a VM's config and its summary (binary, memory, CPUs, display, disks)",
    run = function(args)
        return inspect.info(vm.check(vm.get(args.name)))
    end,
}
