import CLuaShim

/// A Swift object that Lua holds as a userdata handle (a database, a statement, a process).
/// `close()` releases its resource deterministically (`:close()` and `__close`); `__gc` only drops
/// Lua's reference.
public protocol LuaHandle: AnyObject {
    /// The metatable name, also shown in messages ("maqet.process").
    static var luaTypeName: String { get }
    var isClosed: Bool { get }
    func close()
    /// Set when the host owns the object and only lends it to scripts (`maqet.db` in a workflow):
    /// what the host says here is the error `close` raises instead of closing it.
    var lentBy: String? { get }
}

extension LuaHandle {
    public var lentBy: String? { nil }
}

/// How a handle userdata is laid out: one retained pointer to the Swift object. Only `pushHandle`
/// makes userdata with a user value, so "has user value 1" tells ours from any other userdata of
/// the same metatable (a script with `debug.setmetatable(io.stdout, ...)`).
private let handleSlotSize = MemoryLayout<UnsafeMutableRawPointer?>.size

extension Lua {
    /// Creates the metatable for `T` once per state: `methods` become `__index`, plus `close`,
    /// `__close`, `__gc` and `__tostring`. Each of those knows its type (the metatable name is its
    /// upvalue), so it accepts only a `T` handle.
    public func registerHandleType<T: LuaHandle>(_ type: T.Type, methods: [LuaRegistration]) {
        guard luaL_newmetatable(L, T.luaTypeName) != 0 else {
            pop()
            return
        }
        newModule(methods)
        push(T.luaTypeName)
        push(luaHandleClose, upvalues: 1)
        setRawField(-2, "close")
        setRawField(-2, "__index")
        for (field, function) in [("__close", luaHandleClose), ("__gc", luaHandleRelease), ("__tostring", luaHandleToString)] {
            push(T.luaTypeName)
            push(function, upvalues: 1)
            setRawField(-2, field)
        }
        pop()
    }

    /// Pushes a new userdata that keeps `object` alive until Lua collects it.
    public func pushHandle<T: LuaHandle>(_ object: T) {
        let raw = lua_newuserdatauv(L, handleSlotSize, 1)!
        raw.assumingMemoryBound(to: UnsafeMutableRawPointer?.self).pointee = Unmanaged.passRetained(object as AnyObject).toOpaque()
        push(true)
        lua_setiuservalue(L, -2, 1)
        luaL_setmetatable(L, T.luaTypeName)
    }

    /// The handle at `index`, or a usage error naming `function` when it is not a `T` or is closed.
    public func handle<T: LuaHandle>(_ index: Int32, _ type: T.Type, _ function: String, allowClosed: Bool = false) throws -> T {
        guard let slot = handleSlot(index, T.luaTypeName),
              let pointer = slot.pointee,
              let object = Unmanaged<AnyObject>.fromOpaque(pointer).takeUnretainedValue() as? T
        else {
            if let slot = handleSlot(index, T.luaTypeName), slot.pointee == nil {
                throw LuaUsageError("\(function): the \(T.luaTypeName) handle was released (its __gc ran)")
            }
            throw LuaUsageError("\(function): expected a \(T.luaTypeName) handle as self, got \(describe(at: index)) (use ':' to call methods)")
        }
        if object.isClosed && !allowClosed {
            throw LuaUsageError("\(function): the \(T.luaTypeName) handle is closed")
        }
        return object
    }

    /// The pointer slot of the userdata at `index` when it is a handle made by `pushHandle` whose
    /// metatable is the one registered as `typeName`; nil for anything else (never "any userdata").
    func handleSlot(_ index: Int32, _ typeName: String) -> UnsafeMutablePointer<UnsafeMutableRawPointer?>? {
        let index = absolute(index)
        guard lua_type(L, index) == LUA_TUSERDATA, lua_getmetatable(L, index) != 0 else { return nil }
        mq_getmetatable_named(L, typeName)
        let sameType = lua_rawequal(L, -1, -2) != 0
        pop(2)
        guard sameType, lua_rawlen(L, index) == handleSlotSize else { return nil }
        let hasMark = lua_getiuservalue(L, index, 1) != LUA_TNONE
        pop()
        guard hasMark, let raw = lua_touserdata(L, index) else { return nil }
        return raw.assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
    }

    /// A value's type for messages: the `__name` of a userdata's metatable ("FILE*",
    /// "maqet.rows") when it has one, else Lua's type name.
    public func describe(at index: Int32) -> String {
        let index = absolute(index)
        if lua_type(L, index) == LUA_TUSERDATA, lua_getmetatable(L, index) != 0 {
            defer { pop() }
            if rawField(-1, "__name") == LUA_TSTRING, let name = string(at: -1) {
                pop()
                if name.hasPrefix("maqet."), handleSlot(index, name) == nil {
                    return "a userdata with the \(name) metatable that maqet did not make"
                }
                return name
            }
            pop()
        }
        return typeName(at: index)
    }

    /// The metatable name a shared metamethod was registered for (its upvalue 1).
    fileprivate var boundTypeName: String { string(at: mq_upvalue(1)) ?? "maqet handle" }
}

private let luaHandleClose: LuaFunction = { L in
    Lua.call(L) { lua in
        let typeName = lua.boundTypeName
        guard let slot = lua.handleSlot(1, typeName), let pointer = slot.pointee,
              let object = Unmanaged<AnyObject>.fromOpaque(pointer).takeUnretainedValue() as? LuaHandle
        else {
            throw LuaUsageError("close: expected a \(typeName) handle, got \(lua.describe(at: 1))")
        }
        if let owner = object.lentBy {
            throw LuaUsageError("close: \(owner)")
        }
        object.close()
        return 0
    }
}

private let luaHandleRelease: LuaFunction = { L in
    Lua.call(L) { lua in
        let typeName = lua.boundTypeName
        guard let slot = lua.handleSlot(1, typeName) else {
            // Only a script calls __gc with something else (Lua turns an error here into a warning).
            throw LuaUsageError("__gc: expected a \(typeName) handle, got \(lua.describe(at: 1))")
        }
        if let pointer = slot.pointee {
            slot.pointee = nil
            Unmanaged<AnyObject>.fromOpaque(pointer).release()
        }
        return 0
    }
}

private let luaHandleToString: LuaFunction = { L in
    Lua.call(L) { lua in
        let typeName = lua.boundTypeName
        guard let slot = lua.handleSlot(1, typeName) else {
            throw LuaUsageError("__tostring: expected a \(typeName) handle, got \(lua.describe(at: 1))")
        }
        guard let pointer = slot.pointee,
              let object = Unmanaged<AnyObject>.fromOpaque(pointer).takeUnretainedValue() as? LuaHandle
        else {
            lua.push("\(typeName) (released)")
            return 1
        }
        lua.push(object.isClosed ? "\(typeName) (closed)" : typeName)
        return 1
    }
}
