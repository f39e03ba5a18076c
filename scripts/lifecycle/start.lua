-- maqet start NAME [--timeout S] [--no-wait]
-- Reconciles the row, refuses a VM that is already running, creates missing disk images
-- (lib/storage.lua), builds the QEMU command line (lib/qemu.lua) and launches the per-VM runner,
-- which returns once QEMU's QMP monitor answers query-status (or at once with --no-wait).
-- QEMU that exits during start fails the command with QEMU's own message.
local vm = require("maqet.lib.vm")
local config = require("maqet.lib.config")

return {
    description = "Start a VM through its per-VM runner and wait until QMP answers",
    run = function(args)
        if type(args.name) ~= "string" or args.name == "" then
            maqet.error("start: a VM name is required", "usage")
        end
        -- A config maqet never checked (adopted from the published maqet's database, or written
        -- by hand): name the keys it keeps but does not use, as add and apply do.
        local row = vm.get(args.name)
        if row and config.unchecked(row) then
            for _, unused in ipairs(config.unused_keys(row.config)) do
                maqet.log.warn(("VM '%s' (its config was never checked by maqet): %s; fix it with 'maqet apply %s'"):format(
                    row.name, unused.text, row.name))
            end
        end
        return vm.check(vm.start(args.name, { timeout_s = args.timeout, no_wait = args.no_wait }))
    end,
}
