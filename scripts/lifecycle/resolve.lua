-- The VM a name, id or unique id prefix names (lib/vm.lua vm.resolve), for the commands whose
-- work is in Swift (maqet qmp): {id, name, status, qmp_socket_path}. Nothing is changed.
-- Exit 5 when nothing matches, 64 for an id prefix several VMs share.
local vm = require("maqet.lib.vm")

return {
    description = "Look a VM up by name, id or unique id prefix",
    run = function(args)
        local row = vm.check(vm.resolve(args.name))
        return {
            id = row.id,
            name = row.name,
            status = row.status,
            qmp_socket_path = row.qmp_socket_path or maqet.json.null,
        }
    end,
}
