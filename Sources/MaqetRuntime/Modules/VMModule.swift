import MaqetCore

/// `maqet.vm`: VMs as a Lua API. The functions are written in Lua (`scripts/lib/vm.lua`, so a
/// user's edited copy wins); this installs `maqet.vm.list/get/start/stop/qmp/snapshot` as small forwarders
/// that `require("maqet.lib.vm")` on first use, so a command that never touches a VM never loads
/// the library (and a broken edited copy only breaks what uses it).
enum VMModule {
    /// The names `maqet.vm` forwards to `scripts/lib/vm.lua`.
    static let functions = ["list", "get", "start", "stop", "qmp", "snapshot"]

    static func install(_ lua: Lua) {
        let names = functions.map { "\"\($0)\"" }.joined(separator: ", ")
        let source = """
            local vm = {}
            for _, name in ipairs({\(names)}) do
              vm[name] = function(...) return require("maqet.lib.vm")[name](...) end
            end
            maqet.vm = vm
            """
        do {
            try lua.load(source, chunkName: "=maqet.vm")
            try lua.protectedCall(nargs: 0, nresults: 0)
        } catch {
            // Only a broken build can get here: the chunk is a constant.
            preconditionFailure("installing maqet.vm failed: \(error)")
        }
    }
}
