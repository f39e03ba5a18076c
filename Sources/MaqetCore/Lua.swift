import CLuaShim
import Foundation

/// The signature of a Swift function Lua can call. It returns the number of results it pushed, or
/// `MQ_RAISE` after pushing an error message; the C trampoline raises it once this frame is gone.
/// Write bodies with `Lua.call(L, "name") { lua in ... }`, which does that bookkeeping.
public typealias LuaFunction = @convention(c) (OpaquePointer?) -> Int32

/// One registration-table entry: the Lua name next to the Swift function behind it.
public typealias LuaRegistration = (name: String, function: LuaFunction)

/// Misuse of an API from Lua (wrong argument type, closed handle): raised as a Lua error.
public struct LuaUsageError: Error, CustomStringConvertible {
    public var description: String
    public init(_ message: String) { description = message }
}

/// An error value that is already on the Lua stack and must be raised unchanged.
public struct LuaRaiseAsIs: Error {
    public init() {}
}

/// Owns one `lua_State`, opened with the standard libraries, whose allocator counts the bytes Lua
/// holds and refuses to go past `memoryLimit` (0: no limit). The corresponding C function is
/// `lua_newstate` (through `mq_newstate`).
public final class LuaState {
    public let lua: Lua

    public init(memoryLimit: Int = 0) {
        guard let L = mq_newstate(max(0, memoryLimit)) else { fatalError("Lua: cannot allocate a state (out of memory)") }
        luaL_openlibs(L)
        lua = Lua(L)
    }

    deinit {
        mq_closestate(lua.L)
    }

    /// The limit in bytes (0: none), what Lua holds now, and whether a script ever reached it.
    public var memoryLimit: Int { mq_memory_limit(lua.L) }
    public var memoryUsed: Int { mq_memory_used(lua.L) }
    public var memoryLimitReached: Bool { mq_memory_limit_hit(lua.L) != 0 }
}

/// A non-owning view of a `lua_State` with typed, non-raising accessors.
public struct Lua {
    public let L: OpaquePointer

    public init(_ L: OpaquePointer) { self.L = L }

    // MARK: Calling Swift from Lua

    /// Runs `body` for a Lua-callable function. A thrown `LuaUsageError` or any other error becomes
    /// a Lua error raised by the C trampoline after this Swift frame has returned.
    @inline(__always)
    public static func call(_ L: OpaquePointer?, _ body: (Lua) throws -> Int32) -> Int32 {
        let lua = Lua(L!)
        do {
            return try body(lua)
        } catch is LuaRaiseAsIs {
            return MQ_RAISE_AS_IS
        } catch let error as LuaUsageError {
            lua.push(error.description)
            return MQ_RAISE
        } catch {
            lua.push(String(describing: error))
            return MQ_RAISE
        }
    }

    /// Pushes `nil, message, code` (the Lua convention for an expected failure) and returns 3.
    public func fail(_ message: String, code: String? = nil) -> Int32 {
        pushNil()
        push(message)
        if let code { push(code) } else { pushNil() }
        return 3
    }

    // MARK: Stack

    public var top: Int32 {
        get { lua_gettop(L) }
        nonmutating set { lua_settop(L, newValue) }
    }

    public func pop(_ n: Int32 = 1) { mq_pop(L, n) }
    public func type(at index: Int32) -> Int32 { lua_type(L, index) }
    public func typeName(at index: Int32) -> String { String(cString: lua_typename(L, lua_type(L, index))) }
    public func isNoneOrNil(_ index: Int32) -> Bool { mq_isnoneornil(L, index) != 0 }
    public func absolute(_ index: Int32) -> Int32 { lua_absindex(L, index) }

    public func push(_ value: String) {
        var value = value
        value.withUTF8 { buffer in
            buffer.withMemoryRebound(to: CChar.self) { _ = lua_pushlstring(L, $0.baseAddress, $0.count) }
        }
    }

    public func push(bytes: UnsafeRawBufferPointer) {
        _ = lua_pushlstring(L, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
    }

    public func push(_ value: Int64) { lua_pushinteger(L, lua_Integer(value)) }
    public func push(_ value: Int) { lua_pushinteger(L, lua_Integer(value)) }
    public func push(_ value: Double) { lua_pushnumber(L, value) }
    public func push(_ value: Bool) { lua_pushboolean(L, value ? 1 : 0) }
    public func pushNil() { lua_pushnil(L) }
    public func pushValue(at index: Int32) { lua_pushvalue(L, index) }
    public func newTable(arrayCount: Int32 = 0, recordCount: Int32 = 0) { lua_createtable(L, arrayCount, recordCount) }

    public func push(_ function: LuaFunction, upvalues: Int32 = 0) {
        mq_pushfunction(L, function, upvalues)
    }

    // MARK: Reading values (never raise)

    /// The string at `index` if it is a Lua string (numbers are not converted).
    public func string(at index: Int32) -> String? {
        guard lua_type(L, index) == LUA_TSTRING else { return nil }
        var length = 0
        guard let p = mq_tostring(L, index, &length) else { return nil }
        return String(decoding: UnsafeRawBufferPointer(start: p, count: length), as: UTF8.self)
    }

    /// The string at `index`, converting a number like `tostring` would (the stack slot is not changed).
    public func stringOrNumber(at index: Int32) -> String? {
        switch lua_type(L, index) {
        case LUA_TSTRING: return string(at: index)
        case LUA_TNUMBER:
            var i: lua_Integer = 0
            if mq_isinteger_value(L, index, &i) != 0 { return String(i) }
            return String(lua_tonumberx(L, index, nil))
        default: return nil
        }
    }

    public func integer(at index: Int32) -> Int64? {
        guard lua_type(L, index) == LUA_TNUMBER else { return nil }
        var isNumber: Int32 = 0
        let value = lua_tointegerx(L, index, &isNumber)
        return isNumber != 0 ? Int64(value) : nil
    }

    public func isInteger(at index: Int32) -> Bool { lua_isinteger(L, index) != 0 }

    public func number(at index: Int32) -> Double? {
        guard lua_type(L, index) == LUA_TNUMBER else { return nil }
        return lua_tonumberx(L, index, nil)
    }

    public func boolean(at index: Int32) -> Bool { lua_toboolean(L, index) != 0 }

    // MARK: Argument checks (throw LuaUsageError; Lua.call turns it into a Lua error)

    public func checkString(_ index: Int32, _ function: String, _ what: String? = nil) throws -> String {
        guard let value = string(at: index) else {
            throw LuaUsageError("\(function): \(what ?? "argument #\(index)") must be a string, got \(typeName(at: index))")
        }
        return value
    }

    /// A file path or name for a C call: a string without NUL bytes (C would cut it at the first
    /// one and act on another file).
    public func checkPath(_ index: Int32, _ function: String, _ what: String = "path") throws -> String {
        let value = try checkString(index, function, what)
        guard !value.utf8.contains(0) else {
            throw LuaUsageError("\(function): \(what) must not contain a NUL byte")
        }
        return value
    }

    public func optString(_ index: Int32, _ function: String, _ what: String? = nil) throws -> String? {
        if isNoneOrNil(index) { return nil }
        return try checkString(index, function, what)
    }

    public func checkInteger(_ index: Int32, _ function: String, _ what: String? = nil) throws -> Int64 {
        guard let value = integer(at: index) else {
            throw LuaUsageError("\(function): \(what ?? "argument #\(index)") must be an integer, got \(typeName(at: index))")
        }
        return value
    }

    public func optInteger(_ index: Int32, _ function: String, _ what: String? = nil) throws -> Int64? {
        if isNoneOrNil(index) { return nil }
        return try checkInteger(index, function, what)
    }

    public func checkNumber(_ index: Int32, _ function: String, _ what: String? = nil) throws -> Double {
        guard let value = number(at: index) else {
            throw LuaUsageError("\(function): \(what ?? "argument #\(index)") must be a number, got \(typeName(at: index))")
        }
        return value
    }

    public func checkTable(_ index: Int32, _ function: String, _ what: String? = nil) throws {
        guard type(at: index) == LUA_TTABLE else {
            throw LuaUsageError("\(function): \(what ?? "argument #\(index)") must be a table, got \(typeName(at: index))")
        }
    }

    public func optTable(_ index: Int32, _ function: String, _ what: String? = nil) throws -> Bool {
        if isNoneOrNil(index) { return false }
        try checkTable(index, function, what)
        return true
    }

    public func checkFunction(_ index: Int32, _ function: String, _ what: String? = nil) throws {
        guard type(at: index) == LUA_TFUNCTION else {
            throw LuaUsageError("\(function): \(what ?? "argument #\(index)") must be a function, got \(typeName(at: index))")
        }
    }

    // MARK: Tables (raw access: no metamethods run from Swift)

    /// Pushes `t[key]` of the table at `index` (raw).
    public func rawField(_ index: Int32, _ key: String) -> Int32 {
        let table = absolute(index)
        push(key)
        return lua_rawget(L, table)
    }

    /// Sets `t[key] = value on top` (raw) and pops the value.
    public func setRawField(_ index: Int32, _ key: String) {
        let table = absolute(index)
        push(key)
        lua_rotate(L, -2, 1) // key below value
        lua_rawset(L, table)
    }

    public func rawIndex(_ index: Int32, _ i: Int64) -> Int32 { lua_rawgeti(L, index, lua_Integer(i)) }
    public func setRawIndex(_ index: Int32, _ i: Int64) { lua_rawseti(L, index, lua_Integer(i)) }
    public func rawLength(_ index: Int32) -> Int { Int(lua_rawlen(L, index)) }

    /// Reads `t[key]` as an optional string field, raising a usage error for a wrong type.
    public func stringField(_ index: Int32, _ key: String, _ function: String) throws -> String? {
        _ = rawField(index, key)
        defer { pop() }
        if isNoneOrNil(-1) { return nil }
        guard let value = string(at: -1) else {
            throw LuaUsageError("\(function): field '\(key)' must be a string, got \(typeName(at: -1))")
        }
        return value
    }

    public func integerField(_ index: Int32, _ key: String, _ function: String) throws -> Int64? {
        _ = rawField(index, key)
        defer { pop() }
        if isNoneOrNil(-1) { return nil }
        guard let value = integer(at: -1) else {
            throw LuaUsageError("\(function): field '\(key)' must be an integer, got \(typeName(at: -1))")
        }
        return value
    }

    public func numberField(_ index: Int32, _ key: String, _ function: String) throws -> Double? {
        _ = rawField(index, key)
        defer { pop() }
        if isNoneOrNil(-1) { return nil }
        guard let value = number(at: -1) else {
            throw LuaUsageError("\(function): field '\(key)' must be a number, got \(typeName(at: -1))")
        }
        return value
    }

    /// Reads an array of strings (`{"a", "b"}`) at `index`.
    public func stringArray(_ index: Int32, _ function: String, _ what: String) throws -> [String] {
        try checkTable(index, function, what)
        let table = absolute(index)
        let count = rawLength(table)
        var result: [String] = []
        result.reserveCapacity(count)
        for i in 1...max(count, 1) where count > 0 {
            _ = rawIndex(table, Int64(i))
            defer { pop() }
            guard let s = string(at: -1) else {
                throw LuaUsageError("\(function): \(what) item \(i) must be a string, got \(typeName(at: -1))")
            }
            result.append(s)
        }
        return result
    }

    /// Builds a table from registrations and leaves it on the stack.
    public func newModule(_ functions: [LuaRegistration]) {
        newTable(recordCount: Int32(functions.count))
        for entry in functions {
            push(entry.function)
            setRawField(-2, entry.name)
        }
    }

    // MARK: Loading and running

    /// Loads a chunk from text; `chunkName` should be "@path" so messages read `path:line:`.
    public func load(_ source: String, chunkName: String) throws {
        var source = source
        let rc = source.withUTF8 { buffer in
            buffer.withMemoryRebound(to: CChar.self) { mq_loadbuffer(L, $0.baseAddress, $0.count, chunkName) }
        }
        if rc != LUA_OK {
            let message = string(at: -1) ?? "cannot load \(chunkName)"
            pop()
            throw LuaScriptError(message: message)
        }
    }

    public func loadFile(_ path: String) throws {
        let rc = mq_loadfile(L, path)
        if rc != LUA_OK {
            let message = string(at: -1) ?? "cannot load \(path)"
            pop()
            throw LuaScriptError(message: message)
        }
    }

    /// Calls the function below `nargs` arguments through `lua_pcall` with a traceback handler.
    public func protectedCall(nargs: Int32, nresults: Int32) throws {
        let rc = mq_pcall(L, nargs, nresults)
        if rc != LUA_OK {
            let message = stringOrNumber(at: -1) ?? "(error object is a \(typeName(at: -1)) value)"
            pop()
            throw LuaScriptError(message: message)
        }
    }

    // MARK: Per-state context

    /// The pointer stored in the state's extra space (shared with coroutines created after setting it).
    public var context: UnsafeMutableRawPointer? {
        get { mq_extraspace(L).pointee }
        nonmutating set { mq_extraspace(L).pointee = newValue }
    }
}

/// A Lua error that reached Swift: the message (with traceback when it came through `protectedCall`).
public struct LuaScriptError: Error, CustomStringConvertible {
    public var message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
