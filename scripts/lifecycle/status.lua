-- maqet status NAME: the VM's true status (reconciled), pids, sockets, uptime, a config summary
-- and the last line of its log (<datadir>/logs/NAME.log: the last exit reason).
local vm = require("maqet.lib.vm")
local qemu = require("maqet.lib.qemu")

return {
    description = "Show a VM's true status, processes, sockets, uptime and config summary",
    run = function(args)
        local row = vm.check(vm.get(args.name))
        local config = row.config or {}
        local paths = qemu.paths(row)
        local null = maqet.json.null
        local disks = 0
        for _ in ipairs(config.storage or {}) do disks = disks + 1 end
        local runner
        if vm.ACTIVE[row.status] then
            -- "python-maqet": the VM runs under the published (Python) maqet's runner (lib/vm.lua).
            runner = row.runner_kind == "python-maqet" and "python-maqet" or (row.runner_missing and "missing" or "running")
        end
        return {
            name = row.name,
            id = row.id,
            status = row.status,
            alive = row.alive or false,
            pid = row.pid or null,
            runner_pid = row.runner_pid or null,
            runner = runner or null,
            qmp_socket_path = row.qmp_socket_path or null,
            runner_socket_path = (vm.ACTIVE[row.status] and runner ~= "python-maqet") and paths.runner_qmp or null,
            uptime_s = row.uptime_s and math.floor(row.uptime_s) or null,
            -- The stored config as an object (as `maqet ls --format json` has it), and a summary.
            config = config,
            summary = {
                binary = config.binary or qemu.default_binary,
                memory = config.memory or null,
                cpu = config.cpu or null,
                storage_count = disks,
            },
            log_path = vm.log_path(row.name),
            last_log = row.last_log or null,
            created_at = row.created_at or null,
            updated_at = row.updated_at or null,
        }
    end,
}
