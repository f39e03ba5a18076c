import CSQLite
import Foundation

extension Database {
    /// How long a statement waits for another connection's lock before failing with SQLITE_BUSY.
    /// The corresponding C function is `sqlite3_busy_timeout`.
    public func setBusyTimeout(milliseconds: Int32) {
        if let handle { sqlite3_busy_timeout(handle, milliseconds) }
    }

    /// Copies the whole `main` database of `self` into the `main` database of `destination`, page by
    /// page through SQLite (never a file copy), in one step so the copy is one consistent snapshot.
    /// `self` must not be inside a write transaction (SQLite then answers SQLITE_BUSY); a read
    /// transaction is fine and pins the snapshot. Retries a busy destination for up to `busyTimeoutMs`.
    /// The corresponding C functions are `sqlite3_backup_init`, `sqlite3_backup_step` and
    /// `sqlite3_backup_finish`.
    public func copyContents(into destination: Database, busyTimeoutMs: Int = 60_000) throws {
        let source = try requireHandle()
        let target = try destination.requireHandle()
        guard let backup = sqlite3_backup_init(target, "main", source, "main") else {
            throw destination.error(sqlite3_errcode(target), sql: nil)
        }
        var rc: Int32
        var waited = 0
        repeat {
            rc = sqlite3_backup_step(backup, -1)
            if rc == SQLITE_BUSY || rc == SQLITE_LOCKED {
                if waited >= busyTimeoutMs { break }
                sqlite3_sleep(50)
                waited += 50
            }
        } while rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED
        let finish = sqlite3_backup_finish(backup)
        if rc != SQLITE_DONE {
            throw SQLiteError(code: rc, message: String(cString: sqlite3_errstr(rc)) + " (online backup)")
        }
        if finish != SQLITE_OK {
            throw destination.error(finish, sql: nil)
        }
    }

    /// The lines `PRAGMA integrity_check` reports; `["ok"]` for a sound database.
    public func integrityCheck(quick: Bool = false) throws -> [String] {
        try query(quick ? "PRAGMA quick_check" : "PRAGMA integrity_check").compactMap { $0[0].textValue }
    }

    /// Names of the ordinary tables (not SQLite's own `sqlite_*` tables), sorted.
    public func tableNames() throws -> [String] {
        try query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")
            .compactMap { $0[0].textValue }
    }
}

/// Quotes an SQL identifier: `my"table` becomes `"my""table"`.
public func sqlIdentifier(_ name: String) -> String {
    "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
}
