import CSQLite
import Foundation

/// A value SQLite stores or binds.
public enum SQLValue: Equatable, Sendable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])
}

/// An SQLite failure: result code, SQLite's message, and the SQL that failed.
public struct SQLiteError: Error, CustomStringConvertible, Equatable {
    public var code: Int32
    public var message: String
    public var sql: String?

    public init(code: Int32, message: String, sql: String? = nil) {
        self.code = code
        self.message = message
        self.sql = sql
    }

    /// The primary result code (`SQLITE_BUSY`, `SQLITE_CONSTRAINT`, ...).
    public var primaryCode: Int32 { code & 0xFF }

    /// A short symbolic name for the primary code, e.g. "SQLITE_CONSTRAINT".
    public var codeName: String {
        switch primaryCode {
        case SQLITE_ERROR: return "SQLITE_ERROR"
        case SQLITE_PERM: return "SQLITE_PERM"
        case SQLITE_ABORT: return "SQLITE_ABORT"
        case SQLITE_BUSY: return "SQLITE_BUSY"
        case SQLITE_LOCKED: return "SQLITE_LOCKED"
        case SQLITE_NOMEM: return "SQLITE_NOMEM"
        case SQLITE_READONLY: return "SQLITE_READONLY"
        case SQLITE_INTERRUPT: return "SQLITE_INTERRUPT"
        case SQLITE_IOERR: return "SQLITE_IOERR"
        case SQLITE_CORRUPT: return "SQLITE_CORRUPT"
        case SQLITE_FULL: return "SQLITE_FULL"
        case SQLITE_CANTOPEN: return "SQLITE_CANTOPEN"
        case SQLITE_CONSTRAINT: return "SQLITE_CONSTRAINT"
        case SQLITE_MISMATCH: return "SQLITE_MISMATCH"
        case SQLITE_MISUSE: return "SQLITE_MISUSE"
        case SQLITE_AUTH: return "SQLITE_AUTH"
        case SQLITE_RANGE: return "SQLITE_RANGE"
        case SQLITE_NOTADB: return "SQLITE_NOTADB"
        default: return "SQLITE_\(primaryCode)"
        }
    }

    public var description: String {
        var text = "SQLite error \(code): \(message)"
        if let sql { text += " - while executing `\(sql)`" }
        return text
    }
}

/// One SQLite connection. The class owns the `sqlite3*` and closes it in `deinit` or `close()`.
public final class Database {
    public let path: String
    private(set) var handle: OpaquePointer?
    private var authorizer: ((Int32, String?, String?) -> Bool)?

    public struct OpenMode: Sendable {
        let flags: Int32
        /// Open an existing file for reading and writing; fail when it is missing.
        public static let readWrite = OpenMode(flags: SQLITE_OPEN_READWRITE)
        /// Open or create.
        public static let readWriteCreate = OpenMode(flags: SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE)
        public static let readOnly = OpenMode(flags: SQLITE_OPEN_READONLY)
    }

    /// Opens `path`. The corresponding C function is `sqlite3_open_v2`.
    /// Every connection gets a busy timeout and foreign keys on.
    public init(path: String, mode: OpenMode = .readWriteCreate, busyTimeoutMs: Int32 = 10_000) throws {
        self.path = path
        var db: OpaquePointer?
        let rc = sqlite3_open_v2(path, &db, mode.flags | SQLITE_OPEN_NOMUTEX, nil)
        if rc != SQLITE_OK {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
            sqlite3_close_v2(db)
            throw SQLiteError(code: rc, message: message)
        }
        handle = db
        sqlite3_extended_result_codes(db, 1)
        sqlite3_busy_timeout(db, busyTimeoutMs)
        try execute("PRAGMA foreign_keys = ON")
    }

    deinit {
        if let handle { sqlite3_close_v2(handle) }
    }

    /// Closes the connection; further use throws. The corresponding C function is `sqlite3_close_v2`.
    public func close() {
        if let handle {
            sqlite3_close_v2(handle)
            self.handle = nil
        }
    }

    public var isOpen: Bool { handle != nil }

    /// True when SQLite opened the main database read-only (it does so quietly when the file may
    /// not be written). The corresponding C function is `sqlite3_db_readonly`.
    public var isReadOnly: Bool { handle.map { sqlite3_db_readonly($0, "main") == 1 } ?? false }

    func requireHandle(_ sql: String? = nil) throws -> OpaquePointer {
        guard let handle else { throw SQLiteError(code: SQLITE_MISUSE, message: "database connection is closed", sql: sql) }
        return handle
    }

    func error(_ rc: Int32, sql: String?) -> SQLiteError {
        let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(rc))
        return SQLiteError(code: rc, message: message, sql: sql)
    }

    /// Runs one or more statements without parameters. The corresponding C function is `sqlite3_exec`.
    public func execute(_ sql: String) throws {
        let db = try requireHandle(sql)
        var errmsg: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(db, sql, nil, nil, &errmsg)
        if rc != SQLITE_OK {
            let message = errmsg.map { String(cString: $0) } ?? String(cString: sqlite3_errstr(rc))
            sqlite3_free(errmsg)
            throw SQLiteError(code: rc, message: message, sql: sql)
        }
    }

    public func prepare(_ sql: String) throws -> Statement {
        try Statement(database: self, sql: sql)
    }

    /// Runs one statement with bound parameters; returns the number of rows it changed.
    @discardableResult
    public func run(_ sql: String, _ parameters: [SQLValue] = []) throws -> Int {
        let statement = try prepare(sql)
        defer { statement.finalize() }
        try statement.bind(parameters)
        while try statement.step() {}
        return changes
    }

    /// All rows of a query, each as (column names, values).
    public func query(_ sql: String, _ parameters: [SQLValue] = []) throws -> [Row] {
        let statement = try prepare(sql)
        defer { statement.finalize() }
        try statement.bind(parameters)
        var rows: [Row] = []
        let names = statement.columnNames
        while try statement.step() {
            rows.append(Row(columns: names, values: statement.currentValues()))
        }
        return rows
    }

    /// The first column of the first row, or nil when there is no row.
    public func scalar(_ sql: String, _ parameters: [SQLValue] = []) throws -> SQLValue? {
        let statement = try prepare(sql)
        defer { statement.finalize() }
        try statement.bind(parameters)
        guard try statement.step(), statement.columnCount > 0 else { return nil }
        return statement.value(at: 0)
    }

    /// Rows changed by the most recent statement. The corresponding C function is `sqlite3_changes64`.
    public var changes: Int { handle.map { Int(sqlite3_changes64($0)) } ?? 0 }

    public var lastInsertRowID: Int64 { handle.map { sqlite3_last_insert_rowid($0) } ?? 0 }

    /// True while a transaction is open. The corresponding C function is `sqlite3_get_autocommit`.
    public var inTransaction: Bool { handle.map { sqlite3_get_autocommit($0) == 0 } ?? false }

    /// True while this connection holds a write transaction (other connections' writes wait for
    /// it). The corresponding C function is `sqlite3_txn_state`.
    public var holdsWriteTransaction: Bool { handle.map { sqlite3_txn_state($0, nil) == SQLITE_TXN_WRITE } ?? false }

    // MARK: Schema helpers

    public func hasTable(_ name: String) throws -> Bool {
        try scalar("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", [.text(name)]) != nil
    }

    /// Column names of `table` in order (empty when the table does not exist).
    public func columns(of table: String) throws -> [String] {
        try query("SELECT name FROM pragma_table_info(?)", [.text(table)]).compactMap { $0[0].textValue }
    }

    public func hasColumn(_ table: String, _ column: String) throws -> Bool {
        try scalar("SELECT 1 FROM pragma_table_info(?) WHERE name = ?", [.text(table), .text(column)]) != nil
    }

    // MARK: Authorizer

    /// Installs a policy that may refuse actions. `allow(action, arg1, arg2)` returns false to deny.
    /// Pass nil to remove it. The corresponding C function is `sqlite3_set_authorizer`.
    public func setAuthorizer(_ allow: ((Int32, String?, String?) -> Bool)?) {
        guard let handle else { return }
        authorizer = allow
        if allow == nil {
            sqlite3_set_authorizer(handle, nil, nil)
            return
        }
        let context = Unmanaged.passUnretained(self).toOpaque()
        sqlite3_set_authorizer(handle, { context, action, arg1, arg2, _, _ in
            guard let context else { return SQLITE_OK }
            let database = Unmanaged<Database>.fromOpaque(context).takeUnretainedValue()
            guard let allow = database.authorizer else { return SQLITE_OK }
            let a1 = arg1.map { String(cString: $0) }
            let a2 = arg2.map { String(cString: $0) }
            return allow(action, a1, a2) ? SQLITE_OK : SQLITE_DENY
        }, context)
    }
}

/// A result row: column names and values in order, readable by position or name.
public struct Row: Sendable {
    public let columns: [String]
    public let values: [SQLValue]

    public subscript(index: Int) -> SQLValue { values[index] }
    public subscript(name: String) -> SQLValue? {
        columns.firstIndex(of: name).map { values[$0] }
    }
}

public extension SQLValue {
    var textValue: String? {
        switch self {
        case .text(let s): return s
        case .integer(let i): return String(i)
        case .real(let d): return String(d)
        case .blob(let b): return String(decoding: b, as: UTF8.self)
        case .null: return nil
        }
    }

    var integerValue: Int64? {
        switch self {
        case .integer(let i): return i
        case .real(let d): return Int64(exactly: d.rounded(.towardZero))
        case .text(let s): return Int64(s)
        default: return nil
        }
    }

    var isNull: Bool { if case .null = self { return true } else { return false } }
}

/// A prepared statement. It knows its SQL; it is finalised by `finalize()` or `deinit`.
/// It keeps its database alive (a statement that outlives every other reference to the
/// connection must not read a freed object); once the database is closed, `step` refuses.
public final class Statement {
    public let sql: String
    private var handle: OpaquePointer?
    private let database: Database

    init(database: Database, sql: String) throws {
        self.database = database
        self.sql = sql
        let db = try database.requireHandle(sql)
        var stmt: OpaquePointer?
        var tail: UnsafePointer<CChar>?
        let rc = sql.withCString { sqlite3_prepare_v2(db, $0, -1, &stmt, &tail) }
        if rc != SQLITE_OK {
            throw database.error(rc, sql: sql)
        }
        guard let stmt else {
            throw SQLiteError(code: SQLITE_MISUSE, message: "no SQL statement in the text", sql: sql)
        }
        handle = stmt
    }

    /// Takes ownership of a statement prepared elsewhere.
    init(adopting stmt: OpaquePointer, database: Database, sql: String) {
        self.database = database
        self.sql = sql
        handle = stmt
    }

    deinit { finalize() }

    public func finalize() {
        if let handle {
            sqlite3_finalize(handle)
            self.handle = nil
        }
    }

    private func requireHandle() throws -> OpaquePointer {
        guard let handle else { throw SQLiteError(code: SQLITE_MISUSE, message: "statement is finalized", sql: sql) }
        return handle
    }

    public var parameterCount: Int { handle.map { Int(sqlite3_bind_parameter_count($0)) } ?? 0 }
    public var columnCount: Int { handle.map { Int(sqlite3_column_count($0)) } ?? 0 }

    public var columnNames: [String] {
        guard let handle else { return [] }
        return (0..<sqlite3_column_count(handle)).map { String(cString: sqlite3_column_name(handle, $0)) }
    }

    /// Binds values to `?` parameters in order. Values never become SQL text.
    public func bind(_ values: [SQLValue]) throws {
        let stmt = try requireHandle()
        let expected = Int(sqlite3_bind_parameter_count(stmt))
        guard values.count == expected else {
            throw SQLiteError(code: SQLITE_RANGE, message: "statement takes \(expected) parameter(s), \(values.count) given", sql: sql)
        }
        for (offset, value) in values.enumerated() {
            let index = Int32(offset + 1)
            let rc: Int32
            switch value {
            case .null: rc = sqlite3_bind_null(stmt, index)
            case .integer(let i): rc = sqlite3_bind_int64(stmt, index, i)
            case .real(let d): rc = sqlite3_bind_double(stmt, index, d)
            case .text(let s):
                // An explicit byte count: text with NUL bytes is stored whole, not cut at the first NUL.
                var s = s
                if s.isEmpty {
                    rc = sqlite3_bind_text(stmt, index, "", 0, csqlite_transient()) // "" rather than NULL
                } else {
                    rc = s.withUTF8 { utf8 in
                        utf8.withMemoryRebound(to: CChar.self) { text in
                            sqlite3_bind_text64(stmt, index, text.baseAddress, sqlite3_uint64(text.count), csqlite_transient(), UInt8(SQLITE_UTF8))
                        }
                    }
                }
            case .blob(let b):
                rc = b.withUnsafeBytes { sqlite3_bind_blob64(stmt, index, $0.baseAddress, sqlite3_uint64($0.count), csqlite_transient()) }
            }
            if rc != SQLITE_OK { throw database.error(rc, sql: sql) }
        }
    }

    /// Advances; true when a row is available. The corresponding C function is `sqlite3_step`.
    public func step() throws -> Bool {
        let stmt = try requireHandle()
        guard database.isOpen else {
            finalize()
            throw SQLiteError(code: SQLITE_MISUSE, message: "database connection is closed", sql: sql)
        }
        let rc = sqlite3_step(stmt)
        switch rc {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        default:
            let error = database.error(rc, sql: sql)
            sqlite3_reset(stmt)
            throw error
        }
    }

    public func reset() {
        if let handle {
            sqlite3_reset(handle)
            sqlite3_clear_bindings(handle)
        }
    }

    public func value(at index: Int) -> SQLValue {
        guard let stmt = handle else { return .null }
        let i = Int32(index)
        switch sqlite3_column_type(stmt, i) {
        case SQLITE_INTEGER: return .integer(sqlite3_column_int64(stmt, i))
        case SQLITE_FLOAT: return .real(sqlite3_column_double(stmt, i))
        case SQLITE_TEXT:
            let count = Int(sqlite3_column_bytes(stmt, i))
            guard let p = sqlite3_column_text(stmt, i) else { return .text("") }
            return .text(String(decoding: UnsafeBufferPointer(start: p, count: count), as: UTF8.self))
        case SQLITE_BLOB:
            let count = Int(sqlite3_column_bytes(stmt, i))
            guard let p = sqlite3_column_blob(stmt, i) else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: p, count: count)))
        default: return .null
        }
    }

    /// Raw UTF-8 bytes of a text or blob column (no String round trip), for hot paths.
    public func withBytes<T>(at index: Int, _ body: (UnsafeRawBufferPointer?) -> T) -> T {
        guard let stmt = handle else { return body(nil) }
        let i = Int32(index)
        let type = sqlite3_column_type(stmt, i)
        if type == SQLITE_NULL { return body(nil) }
        let p: UnsafeRawPointer? = type == SQLITE_BLOB ? sqlite3_column_blob(stmt, i) : UnsafeRawPointer(sqlite3_column_text(stmt, i))
        let count = Int(sqlite3_column_bytes(stmt, i))
        return body(UnsafeRawBufferPointer(start: p, count: count))
    }

    public func columnType(at index: Int) -> Int32 {
        guard let stmt = handle else { return SQLITE_NULL }
        return sqlite3_column_type(stmt, Int32(index))
    }

    public func currentValues() -> [SQLValue] {
        (0..<columnCount).map { value(at: $0) }
    }
}

extension Database {
    /// Runs every statement in `sql` in order, calling `inspect` on each before it runs (to refuse
    /// some). Parameters are allowed only when `sql` holds a single statement. Returns the total rows
    /// changed.
    @discardableResult
    public func runScript(_ sql: String, _ parameters: [SQLValue] = [], inspect: ((String) throws -> Void)? = nil) throws -> Int {
        let db = try requireHandle(sql)
        let before = sqlite3_total_changes64(db)
        var utf8 = Array(sql.utf8CString)
        var statements = 0
        try utf8.withUnsafeMutableBufferPointer { buffer in
            var cursor = UnsafePointer<CChar>(buffer.baseAddress!)
            while cursor.pointee != 0 {
                var stmt: OpaquePointer?
                var tail: UnsafePointer<CChar>?
                let rc = sqlite3_prepare_v2(db, cursor, -1, &stmt, &tail)
                let text: String = {
                    guard let tail else { return String(cString: cursor) }
                    let length = tail - cursor
                    return String(decoding: UnsafeRawBufferPointer(start: cursor, count: length), as: UTF8.self)
                        .trimmingCharacters(in: .whitespacesAndNewlines)
                }()
                if rc != SQLITE_OK { throw self.error(rc, sql: text) }
                guard let stmt else { break } // only whitespace or comments left
                let statement = Statement(adopting: stmt, database: self, sql: text) // owns and finalises stmt
                statements += 1
                if let inspect { try inspect(text) }
                if statements == 1 && !parameters.isEmpty {
                    if let tail, String(cString: tail).trimmingCharacters(in: .whitespacesAndNewlines).isEmpty == false,
                       Self.containsStatement(tail) {
                        throw SQLiteError(code: SQLITE_MISUSE, message: "parameters can only be bound to a single statement; split the SQL", sql: sql)
                    }
                }
                try statement.bind(statements == 1 ? parameters : [])
                while try statement.step() {}
                statement.finalize()
                cursor = tail ?? cursor.advanced(by: strlen(cursor))
            }
        }
        if statements == 0 && !parameters.isEmpty {
            throw SQLiteError(code: SQLITE_MISUSE, message: "no SQL statement to bind parameters to", sql: sql)
        }
        return Int(sqlite3_total_changes64(db) - before)
    }

    private static func containsStatement(_ tail: UnsafePointer<CChar>) -> Bool {
        sqlite3_complete(tail) != 0 && String(cString: tail).contains(where: { !$0.isWhitespace && $0 != ";" })
    }
}
