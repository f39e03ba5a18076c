import ArgumentParser
import Foundation
import MaqetCore
import MaqetRuntime

extension Maqet {
    /// `maqet qmp NAME COMMAND [JSON | key=value ...]`: one QMP command on a running VM's monitor.
    struct Qmp: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "qmp",
            abstract: "Run one QMP command on a running VM and print its result as JSON.",
            discussion: """
                Arguments are either one JSON object ('{"device": "ide0"}') or key=value pairs; a \
                value that parses as JSON (numbers, true/false, null, objects, arrays, "quoted \
                strings") is used as that, anything else as a string. The command's "return" value \
                is printed as pretty JSON on stdout (--compact: one line). Exit status: 0 ok; 1 the \
                VM is not running, QEMU answered with an error (maqet: QMP error CLASS: message) or \
                did not answer within --timeout; 5 no VM of that name; 64 bad usage.
                """)

        @OptionGroup var global: GlobalOptions

        @Option(name: .long, help: ArgumentHelp("Seconds to wait for the connection and the reply.", valueName: "seconds"))
        var timeout: Double = 10

        @Flag(name: .long, help: "Print the result on one line.")
        var compact = false

        @Argument(help: ArgumentHelp("The VM's name.", valueName: "name"))
        var name: String

        @Argument(help: ArgumentHelp("The QMP command (query-status, system_powerdown, ...).", valueName: "command"))
        var command: String

        @Argument(help: ArgumentHelp("One JSON object, or key=value pairs.", valueName: "arguments"))
        var arguments: [String] = []

        func validate() throws {
            if !(timeout > 0 && timeout.isFinite && timeout <= 86_400) {
                throw ValidationError("--timeout must be a number of seconds greater than 0 (at most 86400)")
            }
            _ = try Self.parseArguments(arguments)
        }

        func run() throws {
            let socketPath: String
            do {
                socketPath = try lookUpSocket()
            } catch {
                throw maqet.exitCode(for: error)
            }
            let timeoutMs = Int((timeout * 1000).rounded(.up))
            do {
                let client = try QMPClient(path: socketPath, timeoutMs: timeoutMs)
                defer { client.close() }
                let value = try client.execute(command, arguments: try Self.parseArguments(arguments), timeoutMs: timeoutMs)
                var out = OutputBuffer()
                out.line(try value.serialized(indent: compact ? 0 : 2))
                out.flush()
            } catch let error as QMPError {
                switch error {
                case .connect(_, let errno) where errno == ENOENT || errno == ECONNREFUSED:
                    throw notRunning(error.description)
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

        /// The VM's QMP socket from the state database; not-found and not-running are errors. The
        /// VM is looked up by name, id or id prefix in the one place that does it (lib/vm.lua,
        /// through scripts/lifecycle/resolve.lua).
        private func lookUpSocket() throws -> String {
            let row = try global.runLifecycleWorkflow("resolve.lua", [("name", .string(name))])
            guard case .string(let path)? = row["qmp_socket_path"], !path.isEmpty else {
                throw notRunning("it has no QMP socket recorded")
            }
            var info = stat()
            guard stat(path, &info) == 0 else {
                throw notRunning("its QMP socket \(path) does not exist")
            }
            return path
        }

        /// "maqet: VM 'x' is not running"; with -v, a second line says why.
        private func notRunning(_ reason: String) -> ExitCode {
            if global.verbosity > 0 { global.notice("VM '\(name)': \(reason)") }
            return failure("VM '\(name)' is not running")
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
