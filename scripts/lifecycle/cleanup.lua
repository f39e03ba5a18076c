-- maqet cleanup [--dry-run] [--force]
-- 1. Reconciles every row in an active status (recorded at once, as `maqet ls` does; --dry-run too).
-- 2. Finds orphan QEMUs (their runner is gone, or their row was removed), runtime directories of
--    no live VM, free lock files of removed VMs, and files the published maqet left behind
--    (lib/cleanup.lua says how each is recognised; nothing is guessed from a pid alone).
-- 3. --dry-run: lists them and changes nothing more. Otherwise asks "Clean up N things? [y/N]"
--    on a terminal unless --force; without a terminal it needs --force.
-- 4. Ends the orphans (QMP quit, SIGTERM, SIGKILL; a VM's row is recorded stopped) and removes
--    the files.
local cleanup = require("maqet.lib.cleanup")
local vm = require("maqet.lib.vm")

return {
    description = "Reconcile every VM, end orphan QEMUs and remove stale runtime files",
    run = function(args)
        local plan = cleanup.plan()
        local found = cleanup.count(plan)
        if args.dry_run or found == 0 then return cleanup.report(plan, args.dry_run) end
        if args.interactive and not args.force then
            -- Say what would be done before asking.
            for _, line in ipairs(cleanup.describe(plan)) do io.stderr:write("  ", line, "\n") end
        end
        local question = ("Clean up %d thing%s?"):format(found, found == 1 and "" or "s")
        if not vm.confirm(question, { granted = args.force, interactive = args.interactive,
                how = "add --force (or look first with --dry-run)" }) then
            maqet.error("nothing cleaned up", "refused")
        end
        return cleanup.report(cleanup.apply(plan), false)
    end,
}
