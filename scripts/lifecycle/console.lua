-- maqet console NAME [--log]
-- Finds the VM's serial console (lib/console.lua) and hands its paths to the command, which
-- attaches the terminal to console.sock or prints console.log. Refuses a VM whose config has its
-- own serial line, and (to attach) a VM that is not running.
local vm = require("maqet.lib.vm")
local console = require("maqet.lib.console")

return {
    description = "Find a VM's serial console: its socket, lock and log",
    run = function(args)
        if type(args.name) ~= "string" or args.name == "" then
            maqet.error("console: a VM name is required", "usage")
        end
        local c = vm.check(console.open(args.name))
        local row = vm.check(vm.get(args.name))
        local running = (row.status == "running" or row.status == "paused") and row.alive or false
        if args.attach and not running then
            maqet.error(("VM '%s' is not running (status %s); start it with 'maqet start %s', or read its log with 'maqet console %s --log'"):format(
                args.name, row.status, args.name, args.name), "failure")
        end
        return {
            name = args.name,
            status = row.status,
            running = running,
            socket = c.paths.console_sock,
            lock = c.paths.console_lock,
            log = c.paths.console_log,
            boot_offset = c:boot_offset(),
        }
    end,
}
