-- maqet show-cmd NAME: the exact QEMU command line `maqet start NAME` would run (lib/qemu.lua),
-- shell-quoted on one line. Nothing is created or started.
local qemu = require("maqet.lib.qemu")

return {
    description = "Print the QEMU command line a start would use",
    run = function(args)
        local row = maqet.db:query("SELECT * FROM vm_instances WHERE name = ?", args.name)[1]
        if not row then
            maqet.error(("no VM named '%s' (see 'maqet ls')"):format(args.name), "not_found")
        end
        local argv = qemu.argv(row, qemu.paths(row))
        return { name = row.name, argv = argv, command = qemu.shell_quote(argv) }
    end,
}
