-- maqet show-cmd NAME: the exact QEMU command line `maqet start NAME` would run (lib/qemu.lua),
-- shell-quoted on one line. Nothing is created or started.
local qemu = require("maqet.lib.qemu")
local vm = require("maqet.lib.vm")

return {
    description = "Print the QEMU command line a start would use",
    run = function(args)
        local row = vm.check(vm.resolve(args.name))
        local argv = qemu.argv(row, qemu.paths(row))
        return { name = row.name, argv = argv, command = qemu.shell_quote(argv) }
    end,
}
