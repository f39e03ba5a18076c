import CLuaShim
import MaqetCore

/// A QMP connection opened by `maqet.qmp.connect`. Closing it (`:close()`, `<close>`, the end of
/// the script) closes the socket; QEMU keeps running.
final class QMPHandle: LuaHandle {
    static let luaTypeName = "maqet.qmp"
    var client: QMPClient?
    init(_ client: QMPClient) { self.client = client }
    var isClosed: Bool { client == nil }
    func close() {
        client?.close()
        client = nil
    }
}

/// `maqet.qmp`: talk to a QEMU monitor socket. QMP command names pass through as strings.
enum QMPModule {
    static let functions: [LuaRegistration] = [
        ("connect", connect),
    ]

    /// Methods of a connection handle (plus `close`).
    static let methods: [LuaRegistration] = [
        ("execute", execute),
        ("next_event", nextEvent),
        ("greeting", greeting),
    ]

    static func registerTypes(_ lua: Lua) {
        lua.registerHandleType(QMPHandle.self, methods: methods)
    }

    /// A transport failure or a QMP error as `nil, message, code`. A wait cut short by Ctrl-C or
    /// `--timeout` raises instead, like every other blocking call.
    static func fail(_ lua: Lua, _ error: QMPError, _ function: String) throws -> Int32 {
        if case .timeout = error, ProcessModule.stopRequested() { throw ProcessModule.stopError(function) }
        if case let .commandFailed(_, errorClass, description) = error {
            return lua.fail(description, code: errorClass)
        }
        return lua.fail(error.description, code: error.codeName)
    }

    /// Reads an optional timeout in ms (>= 0).
    static func timeout(_ lua: Lua, _ index: Int32, _ function: String) throws -> Int? {
        guard let value = try lua.optInteger(index, function, "timeout_ms") else { return nil }
        guard value >= 0, value <= Int64(Int32.max) else { throw LuaUsageError("\(function): timeout_ms must be between 0 and \(Int32.max)") }
        return Int(value)
    }

    /// Reads `opts.timeout_ms` of the options table at `index`.
    static func optionsTimeout(_ lua: Lua, _ index: Int32, _ function: String) throws -> Int? {
        guard try lua.optTable(index, function, "opts") else { return nil }
        guard let value = try lua.integerField(index, "timeout_ms", function) else { return nil }
        guard value >= 0, value <= Int64(Int32.max) else { throw LuaUsageError("\(function): field 'timeout_ms' must be between 0 and \(Int32.max)") }
        return Int(value)
    }

    /// Pushes `{event=, data=, timestamp=}`.
    static func push(_ lua: Lua, _ event: QMPEvent) throws {
        lua.newTable(recordCount: 3)
        lua.push(event.name)
        lua.setRawField(-2, "event")
        try JSONModule.push(lua, event.data)
        lua.setRawField(-2, "data")
        lua.push(event.timestamp)
        lua.setRawField(-2, "timestamp")
    }

    // MARK: Functions

    /// `maqet.qmp.connect(path [, opts])`: a connection handle, or `nil, message, code`.
    private static let connect: LuaFunction = { L in
        Lua.call(L) { lua in
            let function = "maqet.qmp.connect"
            let path = try lua.checkString(1, function, "path")
            let timeoutMs = try optionsTimeout(lua, 2, function) ?? 5000
            do {
                let client = try QMPClient(path: path, timeoutMs: timeoutMs, shouldStop: ProcessModule.stopRequested)
                lua.pushHandle(QMPHandle(client))
                return 1
            } catch let error as QMPError {
                return try fail(lua, error, function)
            }
        }
    }

    /// `conn:execute(command [, args [, opts]])`: the `return` value, or `nil, desc, class` for a
    /// QMP error and `nil, message, code` for a transport failure.
    private static let execute: LuaFunction = { L in
        Lua.call(L) { lua in
            let function = "conn:execute"
            let handle = try lua.handle(1, QMPHandle.self, function)
            let command = try lua.checkString(2, function, "command")
            guard !command.isEmpty else { throw LuaUsageError("\(function): command must not be empty") }
            var arguments: JSONValue?
            if !lua.isNoneOrNil(3) {
                try lua.checkTable(3, function, "args")
                var encoder = JSONModule.Encoder(lua: lua)
                encoder.function = function
                let value = try encoder.value(at: 3, depth: 0)
                guard case .object = value else {
                    throw LuaUsageError("\(function): args must be a table of named arguments (a JSON object), got an array")
                }
                arguments = value
            }
            let timeoutMs = try optionsTimeout(lua, 4, function)
            do {
                let value = try handle.client!.execute(command, arguments: arguments, timeoutMs: timeoutMs)
                try JSONModule.push(lua, value)
                return 1
            } catch let error as QMPError {
                return try fail(lua, error, function)
            }
        }
    }

    /// `conn:next_event([timeout_ms])`: the next event, `nil, "…", "ETIMEDOUT"` when none arrived in
    /// time (no timeout = wait forever), `nil, message, "EPIPE"` once QEMU closed the connection.
    private static let nextEvent: LuaFunction = { L in
        Lua.call(L) { lua in
            let function = "conn:next_event"
            let handle = try lua.handle(1, QMPHandle.self, function)
            let timeoutMs = try timeout(lua, 2, function)
            do {
                guard let event = try handle.client!.nextEvent(timeoutMs: timeoutMs) else {
                    if ProcessModule.stopRequested() { throw ProcessModule.stopError(function) }
                    return lua.fail("QMP: no event within \(timeoutMs ?? 0) ms", code: "ETIMEDOUT")
                }
                try push(lua, event)
                return 1
            } catch let error as QMPError {
                return try fail(lua, error, function)
            }
        }
    }

    /// `conn:greeting()`: the `"QMP"` member of QEMU's greeting (`version`, `capabilities`).
    private static let greeting: LuaFunction = { L in
        Lua.call(L) { lua in
            let handle = try lua.handle(1, QMPHandle.self, "conn:greeting")
            try JSONModule.push(lua, handle.client!.greeting)
            return 1
        }
    }
}
