import ArgumentParser
import Foundation
import MaqetCore
import MaqetRuntime

/// What the workflow commands (add, apply, start, stop, status, rm, show-cmd) share: open the
/// state in the command's own Lua runtime, run a workflow script, hand back its result.
extension GlobalOptions {
    /// Runs workflow `path` ("lifecycle/add.lua") with `arguments` and returns its result. Errors
    /// become a one-line message on stderr and the documented exit code (thrown as `ExitCode`).
    ///
    /// `refusalWritesNothing`: when the workflow fails on a data directory that had no database
    /// yet, the database (and the data directory, when this run created it) is removed again, so
    /// a refused `add` or `apply` leaves nothing behind.
    func runWorkflow(_ path: String, _ arguments: JSONValue, refusalWritesNothing: Bool = false) throws -> JSONValue {
        let configuration = stateConfiguration
        let fileManager = FileManager.default
        let hadDataDirectory = fileManager.fileExists(atPath: configuration.dataDirectory)
        let hadDatabase = fileManager.fileExists(atPath: configuration.databasePath)
        let runtime = makeRuntime()
        do {
            let store = try StateStore.open(configuration, runtime: runtime, notice: notice)
            defer { store.database.close() }
            runtime.exposeStateDatabase(store.database)
            do {
                return try withExtendedLifetime(runtime) {
                    try runtime.runWorkflow(path, arguments: arguments)
                }
            } catch {
                if refusalWritesNothing && !hadDatabase {
                    store.database.close()
                    for suffix in ["", "-wal", "-shm"] { unlink(configuration.databasePath + suffix) }
                    if !hadDataDirectory { rmdir(configuration.dataDirectory) }
                }
                throw error
            }
        } catch {
            throw maqet.exitCode(for: error)
        }
    }

    /// Runs `scripts/lifecycle/<workflow>` with `arguments`.
    func runLifecycleWorkflow(_ workflow: String, _ arguments: [(key: String, value: JSONValue)]) throws -> JSONValue {
        try runWorkflow("lifecycle/" + workflow, .object(arguments))
    }
}

extension JSONValue {
    /// Text for a human: strings as they are, numbers plainly, null as "-".
    var plainText: String {
        switch self {
        case .null: return "-"
        case .bool(let b): return b ? "yes" : "no"
        case .integer(let i): return String(i)
        case .double(let d): return (try? JSONValue.formatDouble(d)) ?? String(d)
        case .string(let s): return s
        case .array(let items): return items.map(\.plainText).joined(separator: ", ")
        case .object: return (try? serialized()) ?? ""
        }
    }

    /// A value for a human: strings as they are, others as compact JSON.
    var humanValue: String {
        if case .string(let s) = self { return s }
        if case .null = self { return "(none)" }
        return (try? serialized()) ?? "?"
    }

    /// The string, for a string value.
    var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    var arrayItems: [JSONValue] {
        if case .array(let items) = self { return items }
        return []
    }

    /// Pretty JSON on stdout.
    func printJSON() {
        print((try? serialized(indent: 2)) ?? "null")
    }
}

/// Seconds as a human duration: "42s", "3m 05s", "2h 03m", "4d 01h".
func humanDuration(_ seconds: Int64) -> String {
    let s = max(0, seconds)
    if s < 60 { return "\(s)s" }
    if s < 3600 { return String(format: "%dm %02ds", s / 60, s % 60) }
    if s < 86400 { return String(format: "%dh %02dm", s / 3600, (s % 3600) / 60) }
    return String(format: "%dd %02dh", s / 86400, (s % 86400) / 3600)
}

/// Validates a --timeout value in seconds.
func validateTimeout(_ timeout: Double?) throws {
    if let timeout, !(timeout > 0 && timeout.isFinite) {
        throw ValidationError("--timeout must be a number of seconds greater than 0")
    }
}
