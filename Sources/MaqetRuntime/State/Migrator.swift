import CLuaShim
import CSQLite
import Foundation
import MaqetCore

final class RefusalLog {
    var last: String?
}

/// What a migration run did.
public struct MigrationOutcome {
    public var fromVersion: Int
    public var toVersion: Int
    public var fromLayout: SchemaLayout
    /// The automatic backup taken before migrating (nil for a new database).
    public var backupPath: String?
    public var applied: [Migration]
}

/// Brings a database to the latest schema: every pending migration and the version update in one
/// transaction, after a verified backup. Mechanism only: what each step changes is in the Lua files.
final class Migrator {
    let configuration: StateConfiguration
    let migrations: MigrationSet
    let verbosity: Int
    private var runtime: Runtime?
    /// What the authorizer refused during the run, to explain SQLite's terse "not authorized".
    private var refusals: RefusalLog?

    /// `runtime`: the command's Lua state, when it has one (one lua_State per process); without
    /// one, a state is built only if a migration is actually pending.
    init(configuration: StateConfiguration, migrations: MigrationSet, verbosity: Int, runtime: Runtime? = nil) {
        self.configuration = configuration
        self.migrations = migrations
        self.verbosity = verbosity
        self.runtime = runtime
    }

    /// How long a migrator waits for another process's write lock (or migration) to finish.
    static let lockTimeoutMs: Int32 = 60_000

    /// Migrates `database` (an open connection to the state file) if it is behind. Returns nil when
    /// another process had already done it (or nothing was pending).
    func run(_ database: Database, dryRun: Bool = false) throws -> MigrationOutcome? {
        database.setBusyTimeout(milliseconds: Self.lockTimeoutMs)
        defer { database.setBusyTimeout(milliseconds: 10_000) }
        // Only a brand-new (empty) file gets its journal mode set; an existing file keeps its own.
        if !dryRun, try SchemaVersion.quickRead(database) == nil, try database.tableNames().isEmpty {
            _ = try database.query("PRAGMA journal_mode = WAL")
        }
        try database.execute("PRAGMA foreign_keys = OFF")
        defer { try? database.execute("PRAGMA foreign_keys = ON") }
        // The write lock serialises migrators across processes; the version is read again under it.
        try database.execute(dryRun ? "BEGIN" : "BEGIN IMMEDIATE")
        var backupPath: String?
        var current: Migration?
        do {
            let version = try SchemaVersion.read(database)
            let latest = migrations.latestVersion
            if version.version > latest {
                throw StateStore.newerError(database.path, version: version.version, latest: latest)
            }
            if version.version == latest && version.layout != .python {
                try database.execute("COMMIT")
                return nil
            }
            let pending = migrations.pending(after: version.version)
            let loaded = try loadChunks(pending)
            let lua = loaded.lua
            defer { lua.top = loaded.base }
            if dryRun {
                try database.execute("ROLLBACK")
                return MigrationOutcome(fromVersion: version.version, toVersion: latest, fromLayout: version.layout, backupPath: nil, applied: pending)
            }

            if version.layout != .empty {
                let check = try database.integrityCheck(quick: true)
                guard check == ["ok"] else {
                    throw MaqetError("\(database.path) is damaged (quick_check: \(StateFiles.oneLine(check))); refusing to migrate it. Restore a backup: maqet db backups, then maqet db restore BACKUP", status: .databaseRefused)
                }
                try Backups.checkFreeSpace(directory: configuration.dataDirectory, databasePath: database.path)
                // A second connection reads the snapshot this one has locked against writers.
                let reader = try Database(path: database.path, mode: .readOnly, busyTimeoutMs: Self.lockTimeoutMs)
                defer { reader.close() }
                backupPath = try Backups.create(from: reader, directory: configuration.dataDirectory, kind: .automatic)
                Backups.prune(in: configuration.dataDirectory, keep: max(1, configuration.keepBackups)) // never the one just taken
            }

            let handle = DatabaseHandle(database, lentBy: "the migration's database is owned by maqet, which commits or rolls back the migration; a migration may not close it")
            handle.strict = true
            handle.guardStatement = Self.refuseTransactionControl
            let refusals = RefusalLog()
            database.setAuthorizer { action, arg1, _ in
                let allowed = Self.authorize(action, arg1, nil)
                if !allowed { refusals.last = Self.actionName(action, arg1) }
                return allowed
            }
            self.refusals = refusals
            defer { database.setAuthorizer(nil) }

            try SchemaVersion.adoptCurrentLayout(database, from: version, migrations: migrations)
            let source = migrations.source == "built-in" ? "maqet \(MaqetVersion.string)" : migrations.source
            for (offset, migration) in pending.enumerated() {
                current = migration
                let started = DispatchTime.now().uptimeNanoseconds
                try runUp(lua, tableIndex: loaded.base + Int32(offset) + 1, migration: migration, handle: handle)
                let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1_000_000
                try HistoryEntry(version: migration.number, name: migration.name, checksum: try migration.checksum(),
                                 appliedAt: Self.utcNow(), durationMs: (elapsed * 1000).rounded() / 1000, source: source)
                    .insert(database)
            }
            current = nil
            try SchemaVersion.write(database, version: latest)
            database.setAuthorizer(nil)
            let violations = try database.query("PRAGMA foreign_key_check")
            if !violations.isEmpty {
                let sample = violations.prefix(3).map { "\($0[0].textValue ?? "?") row \($0[1].textValue ?? "?") -> \($0[2].textValue ?? "?")" }
                throw MaqetError("after the migrations, \(violations.count) row(s) break a foreign key (\(sample.joined(separator: "; ")))")
            }
            try database.execute("COMMIT")
            return MigrationOutcome(fromVersion: version.version, toVersion: latest, fromLayout: version.layout, backupPath: backupPath, applied: pending)
        } catch {
            database.setAuthorizer(nil)
            if database.inTransaction { try? database.execute("ROLLBACK") }
            throw failure(error, migration: current, backupPath: backupPath, database: database)
        }
    }

    /// Turns an error inside the run into the message users see.
    private func failure(_ error: Error, migration: Migration?, backupPath: String?, database: Database) -> Error {
        if let error = error as? MaqetError, error.status == .databaseRefused || (migration == nil && backupPath == nil) {
            return error
        }
        var detail: String
        switch error {
        case let error as LuaScriptError: detail = trimTraceback(error.message)
        case let error as MaqetError: detail = error.message
        case let error as SQLiteError:
            if error.primaryCode == SQLITE_CORRUPT || error.primaryCode == SQLITE_NOTADB {
                return MaqetError("\(database.path) is damaged: \(error.description); it was left untouched", status: .databaseRefused)
            }
            detail = error.description
        default: detail = String(describing: error)
        }
        if let refused = refusals?.last {
            detail += " (\(refused) is not allowed in a migration: maqet runs all pending migrations in one transaction and commits it itself; use db:transaction(fn) for a savepoint)"
        }
        var lines: [String] = []
        if let migration {
            lines.append("migration \(migration.displayPath) failed: \(detail)")
        } else {
            lines.append("migrating \(database.path) failed: \(detail)")
        }
        lines.append("  the database was rolled back and is unchanged.")
        if let backupPath {
            lines.append("  backup taken before migrating: \(backupPath)")
            lines.append("  to return to it: maqet db restore \(backupPath)")
            lines.append("  (copying it over instances.db with cp is unsafe unless no maqet process is running)")
        }
        return MaqetError(lines.joined(separator: "\n"), status: .migrationFailed)
    }

    private func trimTraceback(_ message: String) -> String {
        guard verbosity < 1, let range = message.range(of: "\nstack traceback:") else { return message }
        return String(message[..<range.lowerBound])
    }

    // MARK: Lua

    /// Loads and runs every pending chunk, leaving their tables on the stack above `base`; checks
    /// each returns `{ description = string, up = function or SQL string }`.
    private func loadChunks(_ pending: [Migration]) throws -> (lua: Lua, base: Int32) {
        let runtime = self.runtime ?? Runtime(verbosity: verbosity)
        self.runtime = runtime
        let lua = runtime.lua
        let base = lua.top
        do {
            for migration in pending {
                let text = try migration.text()
                do {
                    try lua.load(text, chunkName: migration.chunkName)
                    try lua.protectedCall(nargs: 0, nresults: 1)
                } catch let error as LuaScriptError {
                    throw MaqetError("migration \(migration.displayPath) cannot be loaded: \(trimTraceback(error.message)); nothing was changed", status: .migrationFailed)
                }
                guard lua.type(at: -1) == LUA_TTABLE else {
                    throw MaqetError("migration \(migration.displayPath) must return a table { description = \"...\", up = function(db) ... end }, got \(lua.typeName(at: -1)); nothing was changed", status: .migrationFailed)
                }
                _ = lua.rawField(-1, "description")
                let descriptionOK = lua.type(at: -1) == LUA_TSTRING
                lua.pop()
                _ = lua.rawField(-1, "up")
                let upType = lua.type(at: -1)
                lua.pop()
                guard descriptionOK else {
                    throw MaqetError("migration \(migration.displayPath) must set description to a string; nothing was changed", status: .migrationFailed)
                }
                guard upType == LUA_TFUNCTION || upType == LUA_TSTRING else {
                    throw MaqetError("migration \(migration.displayPath): up must be a function(db) or an SQL string; nothing was changed", status: .migrationFailed)
                }
            }
        } catch {
            lua.top = base
            throw error
        }
        return (lua, base)
    }

    private func runUp(_ lua: Lua, tableIndex: Int32, migration: Migration, handle: DatabaseHandle) throws {
        _ = lua.rawField(tableIndex, "up")
        if lua.type(at: -1) == LUA_TSTRING {
            let sql = lua.string(at: -1) ?? ""
            lua.pop()
            do {
                try handle.database.runScript(sql, inspect: handle.guardStatement)
            } catch let error as LuaUsageError {
                throw LuaScriptError(message: "\(migration.displayPath): up: \(error.description)")
            } catch let error as SQLiteError {
                throw LuaScriptError(message: "\(migration.displayPath): up: \(error.description)")
            }
            return
        }
        lua.pushHandle(handle)
        try lua.protectedCall(nargs: 1, nresults: 0)
    }

    /// Migration descriptions, for `db status` and `--dry-run`.
    func descriptions(_ list: [Migration]) -> [Int: String] {
        guard !list.isEmpty, let loaded = try? loadChunks(list) else { return [:] }
        defer { loaded.lua.top = loaded.base }
        var result: [Int: String] = [:]
        for (offset, migration) in list.enumerated() {
            _ = loaded.lua.rawField(loaded.base + Int32(offset) + 1, "description")
            result[migration.number] = loaded.lua.string(at: -1)
            loaded.lua.pop()
        }
        return result
    }

    // MARK: Guards

    /// Statements a migration must not run: they would end, start or escape the one transaction the
    /// host owns. `ROLLBACK TO` (a savepoint) is fine.
    static func refuseTransactionControl(_ sql: String) throws {
        let words = leadingWords(sql, count: 3)
        guard let first = words.first else { return }
        let refused: Bool
        switch first {
        case "BEGIN", "COMMIT", "END", "ATTACH", "DETACH", "VACUUM": refused = true
        case "ROLLBACK":
            refused = !(words.dropFirst().first == "TO" || (words.dropFirst().first == "TRANSACTION" && words.dropFirst(2).first == "TO"))
        default: refused = false
        }
        if refused {
            let shown = sql.trimmingCharacters(in: .whitespacesAndNewlines)
            throw LuaUsageError("\(first) is not allowed in a migration (statement: \(shown.count > 80 ? String(shown.prefix(80)) + "..." : shown)): maqet runs all pending migrations in one transaction and commits it itself; use db:transaction(fn) for a savepoint")
        }
    }

    /// The first words of `sql`, upper-cased, skipping whitespace and comments.
    static func leadingWords(_ sql: String, count: Int) -> [String] {
        var words: [String] = []
        let chars = Array(sql.unicodeScalars)
        var i = 0
        var word = ""
        func flush() { if !word.isEmpty { words.append(word.uppercased()); word = "" } }
        while i < chars.count && words.count < count {
            let c = chars[i]
            if c == "-" && i + 1 < chars.count && chars[i + 1] == "-" {
                flush()
                while i < chars.count && chars[i] != "\n" { i += 1 }
            } else if c == "/" && i + 1 < chars.count && chars[i + 1] == "*" {
                flush()
                i += 2
                while i + 1 < chars.count && !(chars[i] == "*" && chars[i + 1] == "/") { i += 1 }
                i += 2
                continue
            } else if CharacterSet.letters.contains(c) || c == "_" {
                word.unicodeScalars.append(c)
            } else {
                flush()
                if !CharacterSet.whitespacesAndNewlines.contains(c) { break }
            }
            i += 1
        }
        flush()
        return Array(words.prefix(count))
    }

    /// SQLite's authorizer during migrations: the same refusals, enforced by SQLite itself.
    static func authorize(_ action: Int32, _ arg1: String?, _ arg2: String?) -> Bool {
        switch action {
        case SQLITE_TRANSACTION, SQLITE_ATTACH, SQLITE_DETACH: return false
        default: return true
        }
    }

    static func actionName(_ action: Int32, _ arg1: String?) -> String {
        switch action {
        case SQLITE_TRANSACTION: return arg1?.uppercased() ?? "BEGIN/COMMIT/ROLLBACK"
        case SQLITE_ATTACH: return "ATTACH"
        case SQLITE_DETACH: return "DETACH"
        default: return "action \(action)"
        }
    }

    static func utcNow() -> String {
        var t = time(nil)
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(format: "%04d-%02d-%02d %02d:%02d:%02d", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec)
    }
}
