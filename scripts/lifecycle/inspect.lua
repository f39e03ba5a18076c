-- maqet inspect NAME: `info` plus the VM's true status, pids, sockets, times and, while QEMU
-- runs, its process from /proc (CPU % over its life, RSS, start time, command line).
-- The steps are lib/inspect.lua.
local vm = require("maqet.lib.vm")
local inspect = require("maqet.lib.inspect")

return {
    description = "Show everything about a VM: config, status, pids, sockets and its QEMU process",
    run = function(args)
        return inspect.inspect(vm.check(vm.get(args.name)))
    end,
}
