-- maqet stop NAME|--all [--force] [--timeout S] [--powerdown-interval S]
-- Graceful: ACPI system_powerdown on the client monitor, sent again every --powerdown-interval
-- (default 2 s) until QEMU exits or --timeout (default 30 s) has passed, then QMP quit, then
-- SIGTERM, then SIGKILL (5 s each). --force: SIGKILL at once. A VM that is still starting is
-- waited for (within --timeout) and then stopped. The result names the step that ended each VM
-- (stopped_by). The row says stopped only after QEMU has exited. With --all every running VM is
-- stopped together (one shared timeout).
local vm = require("maqet.lib.vm")

return {
    description = "Stop a VM (or all): powerdown (repeated), quit, SIGTERM, SIGKILL",
    run = function(args)
        local opts = { force = args.force, timeout_s = args.timeout, powerdown_interval_s = args.powerdown_interval }
        if args.all then
            local rows = {}
            for _, row in ipairs(vm.list()) do
                if vm.ACTIVE[row.status] then rows[#rows + 1] = row end
            end
            local results = vm.stop_rows(rows, opts)
            local failed = {}
            for _, r in ipairs(results) do
                if r.error then failed[#failed + 1] = ("VM '%s' %s"):format(r.name, r.error) end
            end
            if #failed > 0 then maqet.error(table.concat(failed, "; "), "failure") end
            return { vms = maqet.json.array(results) }
        end
        if type(args.name) ~= "string" or args.name == "" then
            maqet.error("stop: give a VM name or --all", "usage")
        end
        return vm.check(vm.stop(args.name, opts))
    end,
}
