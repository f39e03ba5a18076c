import MaqetCore

/// `maqet.vm`: VMs as a Lua API. The functions are written in Lua (`scripts/lib/vm.lua`, so a
/// user's edited copy wins); this installs `maqet.vm.list/get/start/stop/pause/resume/reset/qmp/snapshot/console/wait/events` as small forwarders
/// that `require("maqet.lib.vm")` on first use, so a command that never touches a VM never loads
/// the library (and a broken edited copy only breaks what uses it). `console`, `wait` and `events`
/// forward to `scripts/lib/console.lua` (`open`), `scripts/lib/wait.lua` (`wait`) and
/// `scripts/lib/events.lua` (`follow`) the same way.
enum VMModule {
    /// The names `maqet.vm` forwards: (name, library, function in that library).
    static let functions: [(name: String, library: String, function: String)] = [
        ("list", "vm", "list"), ("get", "vm", "get"), ("start", "vm", "start"), ("stop", "vm", "stop"),
        ("pause", "vm", "pause"), ("resume", "vm", "resume"), ("reset", "vm", "reset"),
        ("qmp", "vm", "qmp"), ("snapshot", "vm", "snapshot"), ("console", "console", "open"), ("wait", "wait", "wait"),
        ("events", "events", "follow"),
    ]

    static func install(_ lua: Lua) {
        let entries = functions.map { "{\"\($0.name)\", \"maqet.lib.\($0.library)\", \"\($0.function)\"}" }
            .joined(separator: ", ")
        let source = """
            local vm = {}
            for _, entry in ipairs({\(entries)}) do
              local name, library, fn = entry[1], entry[2], entry[3]
              vm[name] = function(...) return require(library)[fn](...) end
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
