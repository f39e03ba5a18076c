import ArgumentParser
import Foundation
import MaqetCore

extension Maqet {
    /// `maqet wait NAME --for STATE | --console REGEX [--timeout S]`: runs scripts/lifecycle/wait.lua.
    struct Wait: ParsableCommand {
        static let states = ["running", "paused", "stopped", "crashed"]

        static let configuration = CommandConfiguration(
            commandName: "wait",
            abstract: "Wait until a VM reaches a state, or until its console prints a pattern.",
            discussion: """
                --for running: the VM runs and its QEMU is alive; paused: it is paused; stopped: it is \
                not active (stopped, crashed, or never started); crashed: it is recorded crashed. \
                The truthful status (as 'maqet status' shows it) is checked every 100 ms. \
                --console REGEX (a POSIX extended regular expression, matched on the bytes the guest \
                printed, so a prompt without a newline matches) searches the console log from where \
                the VM's current boot began, so 'maqet start g && maqet wait g --console login:' \
                cannot miss a prompt printed before the wait. On a VM that is not running, the last \
                boot's output is searched once. Without --timeout the wait has no limit (Ctrl-C \
                ends it). See docs/console.md. Exit status: 0 reached; 1 the VM stopped before its \
                console printed REGEX, or it has its own serial line; 5 no such VM; 64 bad usage \
                (an invalid REGEX); 124 --timeout passed.
                """)

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The VM's name.", valueName: "name"))
        var name: String

        @Option(name: .customLong("for"), help: ArgumentHelp("The state to wait for: running, paused, stopped or crashed.", valueName: "state"))
        var state: String?

        @Option(help: ArgumentHelp("Wait for the console to print text matching this POSIX extended regular expression.", valueName: "regex"))
        var console: String?

        @Option(help: ArgumentHelp("Give up after this many seconds (exit 124).", valueName: "seconds"))
        var timeout: Double?

        func validate() throws {
            try validateTimeout(timeout)
            if (state == nil) == (console == nil) { throw ValidationError("give either --for STATE or --console REGEX") }
            if let state, !Self.states.contains(state) {
                throw ValidationError("--for must be one of \(Self.states.joined(separator: ", ")), got '\(state)'")
            }
            if let console, console.isEmpty { throw ValidationError("--console needs a non-empty pattern") }
        }

        func run() throws {
            var args: [(key: String, value: JSONValue)] = [("name", .string(name))]
            if let state { args.append(("for", .string(state))) }
            if let console { args.append(("console", .string(console))) }
            if let timeout { args.append(("timeout", .double(timeout))) }
            let result = try global.runLifecycleWorkflow("wait.lua", args)
            if let match = result["match"]?.stringValue {
                print("\(name): console printed \"\(match)\"") // control bytes made visible by wait.lua
            } else {
                print("\(name): \(result["status"]?.plainText ?? "-")")
            }
        }
    }
}
