import ArgumentParser
import CSQLite
import Foundation
import MaqetCore
import MaqetRuntime

extension Maqet {
    struct Ls: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ls",
            abstract: "List the VMs maqet knows.",
            discussion: """
                Formats:
                  table  (default) VM Name, Status, PID and Created columns under a header; '-' marks \
                no PID. Prints a hint instead when there are no VMs.
                  plain  one VM per line, fields separated by spaces: name status pid created \
                (pid is '-' when none; created is 'YYYY-MM-DD HH:MM:SS', so it spans two fields). \
                Nothing is printed when there are no VMs.
                  json   an array with one object per VM holding every column of vm_instances as \
                stored (config_data stays the original string), plus "config": config_data parsed \
                as a JSON value (null when it is not valid JSON). '[]' when there are no VMs.
                  yaml   the same as json, as a YAML document.
                VMs are sorted by name. When a row is active (starting, running, paused, stopping: \
                scripts/lib/status.lua defines them), ls first checks it against the real process \
                (scripts/lifecycle/reconcile.lua): a dead VM is shown and \
                recorded as stopped or crashed. Like every command that opens the state database, ls first \
                migrates an older database (one notice line on stderr, after a backup).
                """)

        @OptionGroup var global: GlobalOptions

        @Option(help: ArgumentHelp("Only VMs with this status (created, starting, running, paused, stopping, stopped, crashed: the ones scripts/lib/status.lua defines; another word exits 64).", valueName: "status"))
        var status: String?

        @Option(help: "Output format: table, plain, json or yaml.")
        var format: OutputFormat = .table

        func run() throws {
            do {
                try checkStatusFilter()
                let store = try StateStore.open(global.stateConfiguration, verbosity: global.verbosity, notice: global.notice)
                let runners = try reconcileIfRunning(store)
                var out = OutputBuffer(capacity: 1 << 16)
                switch format {
                case .json: try listJSON(store.database, into: &out)
                case .yaml:
                    // The same document as json (built once, in one place), printed as YAML.
                    var json = OutputBuffer(capacity: 1 << 16)
                    try listJSON(store.database, into: &json)
                    let value = try JSONValue.parse(String(decoding: json.bytes, as: UTF8.self))
                    value.printStructured(.yaml)
                case .table, .plain: try listRows(store.database, table: format == .table, runners: runners, into: &out)
                }
                out.flush()
            } catch {
                throw maqet.exitCode(for: error)
            }
        }

        /// `--status` must name a status scripts/lib/status.lua defines: a typo would otherwise list
        /// nothing and look like an answer.
        private func checkStatusFilter() throws {
            guard let status else { return }
            let runtime = global.makeRuntime()
            let known = try withExtendedLifetime(runtime) { try runtime.allStatuses() }
            guard known.contains(status) else {
                throw MaqetError("--status '\(status)' is not a VM status; use one of \(known.joined(separator: ", "))",
                                 status: .usage)
            }
        }

        /// Truthful state: when a row is in an active status (scripts/lib/status.lua says which),
        /// scripts/lifecycle/reconcile.lua checks it against the real processes first. The common
        /// case (nothing active) costs a small Lua state, one require and one query.
        /// Returns, by VM name, the runner of VMs running without maqet's own (reconcile.lua's
        /// `runners`: "missing", "python-maqet"), which the table notes beside the status.
        @discardableResult
        private func reconcileIfRunning(_ store: StateStore) throws -> [String: String] {
            let database = store.database
            let runtime = global.makeRuntime()
            runtime.stateConfiguration = store.configuration
            let active: [String]
            do {
                active = try withExtendedLifetime(runtime) { try runtime.activeStatuses() }
            } catch let error as MaqetError {
                global.notice("warning: the running VMs were not checked (\(error.message)); statuses are as recorded")
                return [:]
            }
            guard !active.isEmpty else { return [:] }
            let list = active.map { "'\($0.replacingOccurrences(of: "'", with: "''"))'" }.joined(separator: ", ")
            let found = try database.scalar("SELECT EXISTS (SELECT 1 FROM vm_instances WHERE status IN (\(list)))")
            guard case .integer(1)? = found else { return [:] }
            runtime.exposeStateDatabase(database)
            do {
                let result = try withExtendedLifetime(runtime) { try runtime.runWorkflow("lifecycle/reconcile.lua") }
                var runners: [String: String] = [:]
                if case .object(let fields)? = result["runners"] {
                    for (name, value) in fields { if case .string(let runner) = value { runners[name] = runner } }
                }
                return runners
            } catch let error as MaqetError {
                // A broken edited reconcile.lua must not hide the list: say so, list the rows as stored.
                global.notice("warning: the running VMs were not checked (\(error.message)); statuses are as recorded")
            }
            return [:]
        }

        private func bind(_ statement: Statement) throws {
            if let status { try statement.bind([.text(status)]) }
        }

        private var whereClause: String { status == nil ? "" : " WHERE status = ?" }

        private func listRows(_ database: Database, table: Bool, runners: [String: String] = [:], into out: inout OutputBuffer) throws {
            let statement = try database.prepare("SELECT name, status, pid, created_at FROM vm_instances\(whereClause) ORDER BY name")
            defer { statement.finalize() }
            try bind(statement)
            let dash: [UInt8] = [0x2D]
            if !table {
                while try statement.step() {
                    for column in 0..<4 {
                        if column > 0 { out.bytes.append(0x20) }
                        statement.withBytes(at: column) { if let b = $0 { out.append(bytes: b) } else { out.append(bytes: dash) } }
                    }
                    out.bytes.append(0x0A)
                }
                return
            }
            // Cells go into one flat buffer (no allocation per cell); `ends` holds where each ends.
            var flat: [UInt8] = []
            flat.reserveCapacity(1 << 16)
            var ends: [Int] = []
            let header = ["VM Name", "Status", "PID", "Created"].map { Array($0.utf8) }
            var widths = header.map(\.count)
            while try statement.step() {
                var rowName = ""
                for column in 0..<4 {
                    let start = flat.count
                    statement.withBytes(at: column) { bytes in
                        if let bytes { flat.append(contentsOf: bytes) } else { flat.append(0x2D) }
                    }
                    if column == 0, !runners.isEmpty { rowName = String(decoding: flat[start...], as: UTF8.self) }
                    if column == 1, let runner = runners[rowName] { flat.append(contentsOf: Array(runnerCellNote(runner).utf8)) }
                    ends.append(flat.count)
                    widths[column] = max(widths[column], displayWidth(flat[start..<flat.count]))
                }
            }
            if ends.isEmpty {
                out.line(status == nil ? "No VMs. Add one with 'maqet add CONFIG.yaml'." : "No VMs with status '\(status!)'.")
                return
            }
            func cell(_ bytes: ArraySlice<UInt8>, _ column: Int) {
                out.append(bytes: bytes)
                if column < 3 { out.append(bytes: repeatElement(UInt8(0x20), count: widths[column] - displayWidth(bytes) + 3)) }
                else { out.bytes.append(0x0A) }
            }
            for column in 0..<4 { cell(header[column][...], column) }
            for column in 0..<4 { cell(Array(repeating: UInt8(0x2D), count: widths[column])[...], column) }
            var start = 0
            for (index, end) in ends.enumerated() {
                cell(flat[start..<end], index % 4)
                start = end
            }
        }

        /// Characters in UTF-8 bytes (continuation bytes do not count).
        private func displayWidth(_ bytes: ArraySlice<UInt8>) -> Int {
            var n = 0
            for b in bytes where b & 0xC0 != 0x80 { n += 1 }
            return n
        }

        private func listJSON(_ database: Database, into out: inout OutputBuffer) throws {
            // json_valid(X) with one argument accepts only RFC 8259 text, so a valid config_data can be
            // embedded as it is (no parse and re-serialise per row).
            let statement = try database.prepare("""
                SELECT *, CASE WHEN json_valid(config_data) THEN config_data END AS "config"
                FROM vm_instances\(whereClause) ORDER BY name
                """)
            defer { statement.finalize() }
            try bind(statement)
            let names = statement.columnNames
            let keys: [[UInt8]] = names.map { name in
                var key = OutputBuffer(capacity: name.utf8.count + 4)
                key.jsonString(name)
                key.append(": ")
                return key.bytes
            }
            let configIndex = names.count - 1
            var count = 0
            out.append("[")
            while try statement.step() {
                out.append(count == 0 ? "\n  {" : ",\n  {")
                count += 1
                for column in 0..<names.count {
                    if column > 0 { out.append(", ") }
                    out.append(bytes: keys[column])
                    switch statement.columnType(at: column) {
                    case SQLITE_NULL: out.append("null")
                    case SQLITE_INTEGER, SQLITE_FLOAT:
                        if case .real(let d) = statement.value(at: column), !d.isFinite {
                            out.append("null")
                        } else {
                            statement.withBytes(at: column) { if let b = $0 { out.append(bytes: b) } }
                        }
                    default:
                        if column == configIndex {
                            statement.withBytes(at: column) { if let b = $0 { out.append(bytes: b) } else { out.append("null") } }
                        } else {
                            statement.withBytes(at: column) { if let b = $0 { out.jsonString(bytes: b) } else { out.append("\"\"") } }
                        }
                    }
                }
                out.append("}")
            }
            out.line(count == 0 ? "]" : "\n]")
        }
    }
}

/// The `maqet ls` table's note beside the status of a VM that runs without maqet's own runner.
func runnerCellNote(_ runner: String) -> String {
    runner == "python-maqet" ? " (under the Python maqet's runner)" : " (runner missing)"
}
