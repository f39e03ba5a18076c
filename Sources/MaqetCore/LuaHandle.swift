import CLuaShim

/// A Swift object that Lua holds as a userdata handle (a database, a statement, a process).
/// `close()` releases its resource deterministically (`:close()` and `__close`); `__gc` only drops
/// Lua's reference.
public protocol LuaHandle: AnyObject {
    /// The metatable name, also shown in messages ("maqet.process").
    static var luaTypeName: String { get }
    var isClosed: Bool { get }
    func close()
}

extension Lua {
    /// Creates the metatable for `T` once per state: `methods` become `__index`, plus `close`,
    /// `__close`, `__gc` and `__tostring`.
    public func registerHandleType<T: LuaHandle>(_ type: T.Type, methods: [LuaRegistration]) {
        guard luaL_newmetatable(L, T.luaTypeName) != 0 else {
            pop()
            return
        }
        newModule(methods + [("close", luaHandleClose)])
        setRawField(-2, "__index")
        push(luaHandleClose)
        setRawField(-2, "__close")
        push(luaHandleRelease)
        setRawField(-2, "__gc")
        push(luaHandleToString)
        setRawField(-2, "__tostring")
        pop()
    }

    /// Pushes a new userdata that keeps `object` alive until Lua collects it.
    public func pushHandle<T: LuaHandle>(_ object: T) {
        let raw = lua_newuserdatauv(L, MemoryLayout<UnsafeMutableRawPointer?>.size, 0)!
        raw.assumingMemoryBound(to: UnsafeMutableRawPointer?.self).pointee = Unmanaged.passRetained(object as AnyObject).toOpaque()
        luaL_setmetatable(L, T.luaTypeName)
    }

    /// The handle at `index`, or a usage error naming `function` when it is not a `T` or is closed.
    public func handle<T: LuaHandle>(_ index: Int32, _ type: T.Type, _ function: String, allowClosed: Bool = false) throws -> T {
        guard let raw = luaL_testudata(L, index, T.luaTypeName),
              let pointer = raw.assumingMemoryBound(to: UnsafeMutableRawPointer?.self).pointee,
              let object = Unmanaged<AnyObject>.fromOpaque(pointer).takeUnretainedValue() as? T
        else {
            throw LuaUsageError("\(function): expected a \(T.luaTypeName) handle as self, got \(typeName(at: index)) (use ':' to call methods)")
        }
        if object.isClosed && !allowClosed {
            throw LuaUsageError("\(function): the \(T.luaTypeName) handle is closed")
        }
        return object
    }

    /// The object behind any handle userdata at `index`.
    func anyHandle(_ index: Int32) -> (LuaHandle, UnsafeMutablePointer<UnsafeMutableRawPointer?>)? {
        guard lua_type(L, index) == LUA_TUSERDATA, let raw = lua_touserdata(L, index) else { return nil }
        let slot = raw.assumingMemoryBound(to: UnsafeMutableRawPointer?.self)
        guard let pointer = slot.pointee,
              let object = Unmanaged<AnyObject>.fromOpaque(pointer).takeUnretainedValue() as? LuaHandle
        else { return nil }
        return (object, slot)
    }
}

private let luaHandleClose: LuaFunction = { L in
    Lua.call(L) { lua in
        guard let (object, _) = lua.anyHandle(1) else {
            throw LuaUsageError("close: expected a handle as self, got \(lua.typeName(at: 1))")
        }
        object.close()
        return 0
    }
}

private let luaHandleRelease: LuaFunction = { L in
    Lua.call(L) { lua in
        if let (_, slot) = lua.anyHandle(1), let pointer = slot.pointee {
            slot.pointee = nil
            Unmanaged<AnyObject>.fromOpaque(pointer).release()
        }
        return 0
    }
}

private let luaHandleToString: LuaFunction = { L in
    Lua.call(L) { lua in
        guard let (object, _) = lua.anyHandle(1) else {
            lua.push("handle (released)")
            return 1
        }
        let name = Swift.type(of: object).luaTypeName
        lua.push(object.isClosed ? "\(name) (closed)" : name)
        return 1
    }
}
