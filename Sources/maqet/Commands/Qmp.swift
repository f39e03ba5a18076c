import ArgumentParser
import Foundation
import MaqetCore
import MaqetRuntime

extension Maqet {
    /// `maqet qmp NAME COMMAND [JSON | key=value ...]`: one QMP command on a running VM's monitor;
    /// `maqet qmp NAME HELPER ...` (or `maqet qmp HELPER NAME ...`): keys, type, screendump, pause,
    /// resume, device-add, device-del, run (scripts/lifecycle/qmp.lua).
    struct Qmp: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "qmp",
            abstract: "Run one QMP command, or a helper (keys, type, screendump, ...), on a running VM.",
            usage: """
                maqet qmp NAME COMMAND [JSON | key=value ...]
                maqet qmp NAME keys KEY... [--hold-time MS]      (also: maqet qmp keys NAME KEY...)
                maqet qmp NAME type TEXT [--hold-time MS]
                maqet qmp NAME screendump FILE
                maqet qmp NAME pause|resume
                maqet qmp NAME device-add DRIVER ID [prop=value ...]
                maqet qmp NAME device-del ID
                maqet qmp NAME run COMMAND [JSON | key=value ...]
                """,
            discussion: """
                COMMAND is any QMP command (query-status, system_powerdown, ...). Its arguments are \
                either one JSON object ('{"device": "ide0"}') or key=value pairs; a value that parses \
                as JSON (numbers, true/false, null, objects, arrays, "quoted strings") is used as \
                that, anything else as a string. The command's "return" value is printed as pretty \
                JSON on stdout (--compact: one line).

                Helpers: 'keys' presses the KEYs (QEMU qcodes: ctrl, alt, delete, ret, a, f1, ...) \
                together, held --hold-time ms; 'type' types TEXT one character at a time on a US \
                layout (printable ASCII, newlines, tabs; several words are joined with spaces; a \
                character it cannot type is named and nothing is sent); 'screendump' writes the \
                display to FILE (relative to the current directory) as PNG, or as PPM when FILE \
                ends in .ppm or QEMU cannot write PNG; 'pause' and 'resume' are 'maqet pause' and \
                'maqet resume'; 'device-add' hot-plugs a device (device_add driver=DRIVER id=ID and \
                the properties); 'device-del' asks QEMU to unplug device ID (device_del); 'run' is \
                COMMAND spelled as a helper. When the first word is a helper, the published maqet's \
                order is meant (maqet qmp pause NAME); otherwise the first word is the VM. A VM \
                named like a helper is reached in that order or by its UUID. The helpers print \
                one line (--format json: an object). The steps are scripts/lifecycle/qmp.lua.

                Exit status: 0 ok; 1 the VM is not running, QEMU answered with an error (maqet: QMP \
                error CLASS: message) or did not answer within --timeout; 3 pause/resume refused \
                (as 'maqet pause'); 5 no VM of that name; 64 bad usage (also a text 'type' cannot type).
                """)

        /// The words that name a helper rather than a QMP command or a VM.
        static let helpers: Set<String> = ["keys", "type", "screendump", "pause", "resume", "device-add", "device-del", "run"]

        @OptionGroup var global: GlobalOptions

        @Option(name: .long, help: ArgumentHelp("Seconds to wait for the connection and each reply.", valueName: "seconds"))
        var timeout: Double = 10

        @Flag(name: .long, help: "Print a QMP command's result on one line.")
        var compact = false

        @Option(name: .customLong("hold-time"), help: ArgumentHelp("keys, type: how long each key is held, in ms.", valueName: "ms"))
        var holdTime: Int = 100

        @Option(help: "Output format of the helpers: text, json or yaml.")
        var format: ReportFormat = .text

        @Argument(help: ArgumentHelp("NAME COMMAND [arguments], NAME HELPER [arguments], or HELPER NAME [arguments].", valueName: "words"))
        var words: [String] = []

        /// What the words ask for.
        struct Invocation: Equatable {
            var name: String
            /// A helper word, or nil for a raw QMP command.
            var helper: String?
            /// The raw QMP command (also for `run`).
            var command: String?
            var rest: [String]
        }

        /// Tells the two orders apart: a helper word first is the published order (HELPER NAME);
        /// otherwise NAME comes first, then a helper word or a QMP command.
        static func invocation(_ words: [String]) throws -> Invocation {
            guard words.count >= 2 else {
                throw ValidationError("expected a VM and a QMP command or helper, e.g. 'maqet qmp NAME query-status' or 'maqet qmp NAME pause'")
            }
            var inv: Invocation
            if helpers.contains(words[0]) {
                inv = Invocation(name: words[1], helper: words[0], command: nil, rest: Array(words.dropFirst(2)))
            } else if helpers.contains(words[1]) {
                inv = Invocation(name: words[0], helper: words[1], command: nil, rest: Array(words.dropFirst(2)))
            } else {
                return Invocation(name: words[0], helper: nil, command: words[1], rest: Array(words.dropFirst(2)))
            }
            let helper = inv.helper!
            // QMP's own screendump with its arguments (filename=..., or a JSON object) stays raw.
            if helper == "screendump", let first = inv.rest.first, first.hasPrefix("filename=") || first.hasPrefix("{") {
                return Invocation(name: inv.name, helper: nil, command: "screendump", rest: inv.rest)
            }
            func count(_ range: ClosedRange<Int>, _ what: String) throws {
                guard range.contains(inv.rest.count) else {
                    throw ValidationError("qmp \(helper): expected \(what), e.g. 'maqet qmp \(inv.name) \(helper) \(what)'")
                }
            }
            switch helper {
            case "keys": try count(1...Int.max, "KEY...")
            case "type": try count(1...Int.max, "TEXT")
            case "screendump": try count(1...1, "FILE")
            case "pause", "resume": try count(0...0, "")
            case "device-add": try count(2...Int.max, "DRIVER ID [prop=value ...]")
            case "device-del": try count(1...1, "ID")
            default: // run
                try count(1...Int.max, "COMMAND [arguments]")
                inv.command = inv.rest.removeFirst()
                inv.helper = nil
            }
            return inv
        }

        func validate() throws {
            if !(timeout > 0 && timeout.isFinite && timeout <= 86_400) {
                throw ValidationError("--timeout must be a number of seconds greater than 0 (at most 86400)")
            }
            if !(0...60_000).contains(holdTime) {
                throw ValidationError("--hold-time must be a number of milliseconds from 0 to 60000")
            }
            let inv = try Self.invocation(words)
            if inv.helper == nil || inv.helper == "device-add" {
                _ = try Self.parseArguments(inv.helper == nil ? inv.rest : Array(inv.rest.dropFirst(2)))
            }
        }

        func run() throws {
            let inv = try Self.invocation(words)
            if let helper = inv.helper { return try runHelper(helper, inv) }
            let command = inv.command!
            let socket = try global.runLifecycleWorkflow("qmp.lua", [("name", .string(inv.name)), ("action", .string("socket"))])
            guard let socketPath = socket["socket"]?.stringValue else { throw failure("VM '\(inv.name)' is not running") }
            let name = socket["name"]?.stringValue ?? inv.name
            let timeoutMs = Int((timeout * 1000).rounded(.up))
            do {
                let client = try QMPClient(path: socketPath, timeoutMs: timeoutMs)
                defer { client.close() }
                let value = try client.execute(command, arguments: try Self.parseArguments(inv.rest), timeoutMs: timeoutMs)
                var out = OutputBuffer()
                out.line(try value.serialized(indent: compact ? 0 : 2))
                out.flush()
            } catch let error as QMPError {
                switch error {
                case .connect(_, let errno) where errno == ENOENT || errno == ECONNREFUSED:
                    if global.verbosity > 0 { global.notice("VM '\(name)': \(error.description)") }
                    throw failure("VM '\(name)' is not running")
                case let .commandFailed(_, errorClass, description):
                    throw failure("QMP error \(errorClass): \(description)")
                case .timeout:
                    throw failure("VM '\(name)': \(error.description) (--timeout \(Run.format(timeout)) s)")
                default:
                    throw failure("VM '\(name)': \(error.description)")
                }
            } catch {
                throw maqet.exitCode(for: error)
            }
        }

        /// Runs a helper through scripts/lifecycle/qmp.lua and prints its result.
        private func runHelper(_ helper: String, _ inv: Invocation) throws {
            var args: [(key: String, value: JSONValue)] = [
                ("name", .string(inv.name)), ("action", .string(helper)),
                ("timeout", .double(timeout)), ("hold_time_ms", .integer(Int64(holdTime))),
            ]
            switch helper {
            case "keys": args.append(("keys", .array(inv.rest.map(JSONValue.string))))
            case "type": args.append(("text", .string(inv.rest.joined(separator: " "))))
            case "screendump": args.append(("file", .string(inv.rest[0])))
            case "device-del": args.append(("id", .string(inv.rest[0])))
            case "device-add":
                var members: [(key: String, value: JSONValue)] = [("driver", .string(inv.rest[0])), ("id", .string(inv.rest[1]))]
                if case .object(let props)? = try Self.parseArguments(Array(inv.rest.dropFirst(2))) {
                    for prop in props where prop.key != "driver" && prop.key != "id" { members.append(prop) }
                }
                args.append(("device", .object(members)))
            default: break
            }
            let result = try global.runLifecycleWorkflow("qmp.lua", args)
            if result.printStructured(format) { return }
            let name = result["name"]?.plainText ?? inv.name
            switch helper {
            case "keys": print("\(name): pressed \(inv.rest.joined(separator: "+"))")
            case "type":
                let n = result["characters"]?.plainText ?? "?"
                print("\(name): typed \(n) character\(n == "1" ? "" : "s")")
            case "screendump": print("\(name): wrote \(result["file"]?.plainText ?? "-") (\(result["format"]?.plainText ?? "-"))")
            case "pause": print("\(name): paused (status \(result["status"]?.plainText ?? "-"))")
            case "resume": print("\(name): resumed (status \(result["status"]?.plainText ?? "-"))")
            case "device-add": print("\(name): added device \(inv.rest[1]) (\(inv.rest[0]))")
            case "device-del": print("\(name): asked QEMU to remove device \(inv.rest[0]) (the guest completes the unplug)")
            default: result.printJSON()
            }
        }

        /// `[]` → nil; one JSON object; or key=value pairs (values parsed as JSON when they parse).
        static func parseArguments(_ words: [String]) throws -> JSONValue? {
            if words.isEmpty { return nil }
            if words.count == 1, words[0].drop(while: { $0 == " " }).hasPrefix("{") {
                let value: JSONValue
                do {
                    value = try JSONValue.parse(words[0])
                } catch {
                    throw ValidationError("arguments are not valid JSON: \(error)")
                }
                guard case .object = value else { throw ValidationError("arguments must be a JSON object") }
                return value
            }
            var members: [(key: String, value: JSONValue)] = []
            for word in words {
                guard let equals = word.firstIndex(of: "="), equals != word.startIndex else {
                    throw ValidationError("expected key=value or one JSON object, got '\(word)'")
                }
                let key = String(word[..<equals])
                let text = String(word[word.index(after: equals)...])
                guard !members.contains(where: { $0.key == key }) else {
                    throw ValidationError("argument '\(key)' is given twice")
                }
                members.append((key, (try? JSONValue.parse(text)) ?? .string(text)))
            }
            return .object(members)
        }
    }
}
