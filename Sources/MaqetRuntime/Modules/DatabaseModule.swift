import CLuaShim
import CSQLite
import Foundation
import MaqetCore

/// A database connection as Lua sees it (`maqet.db`, `maqet.db_open(path)`).
final class DatabaseHandle: LuaHandle {
    static let luaTypeName = "maqet.database"
    let database: Database
    /// Raise on SQL errors instead of returning `nil, message, code` (used for migrations, where
    /// an ignored failure would commit a half-changed schema).
    var strict = false
    /// Refuses statements that would end or escape a transaction the host owns (migrations).
    var guardStatement: ((String) throws -> Void)?
    private var savepointDepth = 0

    /// Why a script may not close this handle, when the host owns the connection and only lends it
    /// (`maqet.db`): the host closes it when the command ends.
    let lentBy: String?

    init(_ database: Database, lentBy: String? = nil) {
        self.database = database
        self.lentBy = lentBy
    }

    var isClosed: Bool { !database.isOpen }
    func close() { database.close() }

    func nextSavepoint() -> String {
        savepointDepth += 1
        return "maqet_sp_\(savepointDepth)"
    }

    func endSavepoint() { savepointDepth -= 1 }
}

/// A running `db:rows()` query; closed when the loop ends, breaks or raises. It keeps its
/// database handle alive, and refuses to step once that database is closed.
final class RowsHandle: LuaHandle {
    static let luaTypeName = "maqet.rows"
    var statement: Statement?
    let owner: DatabaseHandle
    init(_ statement: Statement, of owner: DatabaseHandle) {
        self.statement = statement
        self.owner = owner
    }
    var isClosed: Bool { statement == nil }
    func close() {
        statement?.finalize()
        statement = nil
    }
}

enum DatabaseModule {
    /// `maqet.*` functions.
    static let functions: [LuaRegistration] = [
        ("db_open", dbOpen),
    ]

    /// Methods of a database handle.
    static let methods: [LuaRegistration] = [
        ("exec", exec),
        ("query", query),
        ("rows", rows),
        ("scalar", scalar),
        ("transaction", transaction),
        ("has_table", hasTable),
        ("has_column", hasColumn),
        ("columns", columns),
        ("path", path),
    ]

    static func registerTypes(_ lua: Lua) {
        lua.registerHandleType(DatabaseHandle.self, methods: methods)
        lua.registerHandleType(RowsHandle.self, methods: [])
    }

    // MARK: Helpers

    /// Reads the bound parameters from stack slots `from...top`.
    static func parameters(_ lua: Lua, from first: Int32, _ function: String) throws -> [SQLValue] {
        let top = lua.top
        guard top >= first else { return [] }
        var values: [SQLValue] = []
        values.reserveCapacity(Int(top - first + 1))
        for index in first...top {
            switch lua.type(at: index) {
            case LUA_TNIL: values.append(.null)
            case LUA_TBOOLEAN: values.append(.integer(lua.boolean(at: index) ? 1 : 0))
            case LUA_TNUMBER:
                if lua.isInteger(at: index), let i = lua.integer(at: index) {
                    values.append(.integer(i))
                } else {
                    values.append(.real(lua.number(at: index)!))
                }
            case LUA_TSTRING: values.append(.text(lua.string(at: index)!))
            default:
                throw LuaUsageError("\(function): parameter \(index - first + 1) must be a string, number, boolean or nil, got \(lua.typeName(at: index))")
            }
        }
        return values
    }

    static func push(_ lua: Lua, _ value: SQLValue) {
        switch value {
        case .null: lua.pushNil()
        case .integer(let i): lua.push(i)
        case .real(let d): lua.push(d)
        case .text(let s): lua.push(s)
        case .blob(let b): b.withUnsafeBytes { lua.push(bytes: $0) }
        }
    }

    /// Pushes the current row of `statement` as a table keyed by column name.
    static func pushRow(_ lua: Lua, _ statement: Statement, names: [String]) {
        lua.newTable(recordCount: Int32(names.count))
        for (i, name) in names.enumerated() {
            let type = statement.columnType(at: i)
            if type == SQLITE_NULL { continue }
            switch type {
            case SQLITE_INTEGER, SQLITE_FLOAT: push(lua, statement.value(at: i))
            default: statement.withBytes(at: i) { lua.push(bytes: $0 ?? UnsafeRawBufferPointer(start: nil, count: 0)) }
            }
            lua.setRawField(-2, name)
        }
    }

    /// SQL failure: raise when the handle is strict, else `nil, message, code`.
    static func failure(_ lua: Lua, _ handle: DatabaseHandle, _ error: Error, _ function: String) throws -> Int32 {
        if let error = error as? LuaUsageError { throw error }
        let message: String
        let code: String
        if let sqlError = error as? SQLiteError {
            // A full disk or a file maqet may not write is the machine's fault, not the script's:
            // it raises a one-line maqet.error (exit 1) so no script takes it for "no row changed".
            if let fault = StateFiles.environmentFault(sqlError, path: handle.database.path) {
                if handle.strict { throw LuaUsageError("\(function): \(fault)") }
                throw ErrorModule.pushError(lua, fault, status: "failure")
            }
            message = sqlError.description
            code = sqlError.codeName
        } else {
            message = String(describing: error)
            code = "ERROR"
        }
        if handle.strict { throw LuaUsageError("\(function): \(message)") }
        return lua.fail(message, code: code)
    }

    static func prepareChecked(_ handle: DatabaseHandle, _ sql: String) throws -> Statement {
        try handle.guardStatement?(sql)
        return try handle.database.prepare(sql)
    }

    // MARK: Functions

    private static let dbOpen: LuaFunction = { L in
        Lua.call(L) { lua in
            let path = try lua.checkPath(1, "maqet.db_open", "path")
            do {
                let database = try Database(path: path)
                lua.pushHandle(DatabaseHandle(database))
                return 1
            } catch let error as SQLiteError {
                return lua.fail("maqet.db_open \(path): \(error.message)", code: error.codeName)
            }
        }
    }

    private static let exec: LuaFunction = { L in
        Lua.call(L) { lua in
            let handle = try lua.handle(1, DatabaseHandle.self, "db:exec")
            let sql = try lua.checkString(2, "db:exec", "sql")
            let params = try parameters(lua, from: 3, "db:exec")
            do {
                let changed = try handle.database.runScript(sql, params, inspect: handle.guardStatement)
                lua.push(changed)
                return 1
            } catch {
                return try failure(lua, handle, error, "db:exec")
            }
        }
    }

    private static let query: LuaFunction = { L in
        Lua.call(L) { lua in
            let handle = try lua.handle(1, DatabaseHandle.self, "db:query")
            let sql = try lua.checkString(2, "db:query", "sql")
            let params = try parameters(lua, from: 3, "db:query")
            do {
                let statement = try prepareChecked(handle, sql)
                defer { statement.finalize() }
                try statement.bind(params)
                let names = statement.columnNames
                lua.newTable()
                var n: Int64 = 0
                while try statement.step() {
                    pushRow(lua, statement, names: names)
                    n += 1
                    lua.setRawIndex(-2, n)
                }
                return 1
            } catch {
                return try failure(lua, handle, error, "db:query")
            }
        }
    }

    private static let rowsNext: LuaFunction = { L in
        Lua.call(L) { lua in
            let rows = try lua.handle(1, RowsHandle.self, "db:rows iterator", allowClosed: true)
            guard let statement = rows.statement else { return 0 }
            if rows.owner.isClosed {
                rows.close()
                throw LuaUsageError("db:rows iterator: its maqet.database handle was closed during the loop")
            }
            if try statement.step() {
                pushRow(lua, statement, names: statement.columnNames)
                return 1
            }
            rows.close()
            return 0
        }
    }

    /// `for row in db:rows(sql, ...)`: returns iterator, state, nil, and the state again as the
    /// to-be-closed value so the statement is finalised even when the loop breaks.
    private static let rows: LuaFunction = { L in
        Lua.call(L) { lua in
            let handle = try lua.handle(1, DatabaseHandle.self, "db:rows")
            let sql = try lua.checkString(2, "db:rows", "sql")
            let params = try parameters(lua, from: 3, "db:rows")
            do {
                let statement = try prepareChecked(handle, sql)
                do { try statement.bind(params) } catch { statement.finalize(); throw error }
                lua.push(rowsNext)
                lua.pushHandle(RowsHandle(statement, of: handle))
                lua.pushNil()
                lua.pushValue(at: -2)
                return 4
            } catch {
                return try failure(lua, handle, error, "db:rows")
            }
        }
    }

    private static let scalar: LuaFunction = { L in
        Lua.call(L) { lua in
            let handle = try lua.handle(1, DatabaseHandle.self, "db:scalar")
            let sql = try lua.checkString(2, "db:scalar", "sql")
            let params = try parameters(lua, from: 3, "db:scalar")
            do {
                let statement = try prepareChecked(handle, sql)
                defer { statement.finalize() }
                try statement.bind(params)
                if try statement.step(), statement.columnCount > 0 {
                    push(lua, statement.value(at: 0))
                } else {
                    lua.pushNil()
                }
                return 1
            } catch {
                return try failure(lua, handle, error, "db:scalar")
            }
        }
    }

    /// `db:transaction(fn)`: BEGIN IMMEDIATE (or a SAVEPOINT when one is open), call `fn(db)`,
    /// commit when it returns, roll back and re-raise its error unchanged when it raises.
    private static let transaction: LuaFunction = { L in
        Lua.call(L) { lua in
            let handle = try lua.handle(1, DatabaseHandle.self, "db:transaction")
            try lua.checkFunction(2, "db:transaction", "fn")
            let database = handle.database
            let nested = database.inTransaction
            let savepoint = nested ? handle.nextSavepoint() : nil
            do {
                if let savepoint {
                    try database.execute("SAVEPOINT \(savepoint)")
                } else {
                    try database.execute("BEGIN IMMEDIATE")
                }
            } catch {
                if savepoint != nil { handle.endSavepoint() }
                return try failure(lua, handle, error, "db:transaction")
            }
            lua.top = 2
            lua.pushValue(at: 1)
            // Re-raising the caught error keeps its message and position; no traceback handler here,
            // the outermost pcall adds one.
            let rc = mq_pcall_plain(lua.L, 1, LUA_MULTRET, 0)
            if rc != LUA_OK {
                if let savepoint {
                    try? database.execute("ROLLBACK TO \(savepoint); RELEASE \(savepoint)")
                    handle.endSavepoint()
                } else {
                    try? database.execute("ROLLBACK")
                }
                throw LuaRaiseAsIs()
            }
            do {
                if let savepoint {
                    try database.execute("RELEASE \(savepoint)")
                    handle.endSavepoint()
                } else {
                    try database.execute("COMMIT")
                }
            } catch {
                if let savepoint {
                    try? database.execute("ROLLBACK TO \(savepoint); RELEASE \(savepoint)")
                    handle.endSavepoint()
                } else if database.inTransaction {
                    try? database.execute("ROLLBACK")
                }
                return try failure(lua, handle, error, "db:transaction")
            }
            return lua.top - 1
        }
    }

    private static let hasTable: LuaFunction = { L in
        Lua.call(L) { lua in
            let handle = try lua.handle(1, DatabaseHandle.self, "db:has_table")
            let name = try lua.checkString(2, "db:has_table", "name")
            do {
                lua.push(try handle.database.hasTable(name))
                return 1
            } catch {
                return try failure(lua, handle, error, "db:has_table")
            }
        }
    }

    private static let hasColumn: LuaFunction = { L in
        Lua.call(L) { lua in
            let handle = try lua.handle(1, DatabaseHandle.self, "db:has_column")
            let table = try lua.checkString(2, "db:has_column", "table")
            let column = try lua.checkString(3, "db:has_column", "column")
            do {
                lua.push(try handle.database.hasColumn(table, column))
                return 1
            } catch {
                return try failure(lua, handle, error, "db:has_column")
            }
        }
    }

    private static let columns: LuaFunction = { L in
        Lua.call(L) { lua in
            let handle = try lua.handle(1, DatabaseHandle.self, "db:columns")
            let table = try lua.checkString(2, "db:columns", "table")
            do {
                let names = try handle.database.columns(of: table)
                lua.newTable(arrayCount: Int32(names.count))
                for (i, name) in names.enumerated() {
                    lua.push(name)
                    lua.setRawIndex(-2, Int64(i + 1))
                }
                return 1
            } catch {
                return try failure(lua, handle, error, "db:columns")
            }
        }
    }

    private static let path: LuaFunction = { L in
        Lua.call(L) { lua in
            let handle = try lua.handle(1, DatabaseHandle.self, "db:path", allowClosed: true)
            lua.push(handle.database.path)
            return 1
        }
    }
}
