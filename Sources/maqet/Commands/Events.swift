import ArgumentParser
import Foundation
import MaqetCore

extension Maqet {
    /// `maqet events [NAME ...] [--format text|json]`: runs scripts/lifecycle/events.lua.
    struct Events: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "events",
            abstract: "Print VMs' QMP events and status changes as they happen, until Ctrl-C.",
            discussion: """
                Follows the events log of each named VM (every VM when none is named), \
                <data dir>/logs/NAME.events.jsonl, from its current end, one line per entry. VMs \
                added or started later are picked up. text: 'TIME VM EVENT details' (a status \
                change shows 'status (reason)', a QMP event its data as JSON); json: the log's JSON \
                line as it is (format in docs/lifecycle.md). The steps are \
                scripts/lifecycle/events.lua. Exit status: 5 a named VM does not exist; 130 Ctrl-C.
                """)

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The VMs to follow (default: every VM).", valueName: "name"))
        var names: [String] = []

        @Option(help: "Output format: text or json (one JSON object per line).")
        var format: ReportFormat = .text

        func validate() throws {
            // A stream that never ends has no one YAML document to print.
            if format == .yaml { throw ValidationError("events are a stream of one JSON object per line: use --format json") }
        }

        func run() throws {
            _ = try global.runLifecycleWorkflow("events.lua", [
                ("names", .array(names.map { .string($0) })), ("format", .string(format.rawValue)),
            ])
        }
    }
}
