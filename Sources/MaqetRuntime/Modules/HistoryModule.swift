import CLuaShim
import Foundation
import MaqetCore

/// The one writer of a VM's history log and events log, and the one owner of their formats.
/// Lua calls it as `maqet.history.*`; the runner's Swift calls `History` directly for the writes
/// it makes when a hook failed. Which file is a VM's log is `qemu.paths` (scripts/lib/qemu.lua).
///
/// - history log: one line per entry, `2026-11-25T09:12:03.456Z <message>` (UTC, milliseconds;
///   newlines in the message become "; ").
/// - events log: JSON lines, `{"time":"…","vm":"…","id":"…","event":"…",<other members sorted>}`.
public enum History {
    /// Appends `<timestamp> <message>` to the history log at `path`.
    @discardableResult
    public static func append(_ path: String, _ message: String) -> Bool {
        let text = message.replacingOccurrences(of: "\r\n", with: "; ").replacingOccurrences(of: "\n", with: "; ")
        return LogFile.append(path, Array("\(utcTimestamp()) \(text)\n".utf8))
    }

    /// Appends one event object: `time` first, then `vm`, `id`, `event`, then the other members
    /// of `record` in sorted order (a given `time` member is ignored).
    @discardableResult
    public static func event(_ path: String, _ record: [(key: String, value: JSONValue)]) -> Bool {
        var members: [(key: String, value: JSONValue)] = [("time", .string(utcTimestamp()))]
        for key in ["vm", "id", "event"] {
            if let member = record.first(where: { $0.key == key }) { members.append(member) }
        }
        let rest = record.filter { !["time", "vm", "id", "event"].contains($0.key) }.sorted { $0.key < $1.key }
        members.append(contentsOf: rest)
        guard let line = try? JSONValue.object(members).serialized() else { return false }
        return LogFile.append(path, Array((line + "\n").utf8))
    }
}

enum HistoryModule {
    static let functions: [LuaRegistration] = [
        ("append", append),
        ("event", event),
        ("rotate", rotate),
    ]

    static func path(_ lua: Lua, _ function: String) throws -> String {
        let path = try lua.checkString(1, function, "path")
        guard path.hasPrefix("/"), !path.utf8.contains(0) else {
            throw LuaUsageError("\(function): path must be an absolute path, got '\(path)'")
        }
        return path
    }

    /// `maqet.history.append(path, message)` → true, or `nil, message, "EIO"`.
    private static let append: LuaFunction = { L in
        Lua.call(L) { lua in
            let function = "maqet.history.append"
            let path = try path(lua, function)
            guard let message = lua.stringOrNumber(at: 2) else {
                throw LuaUsageError("\(function): message must be a string, got \(lua.typeName(at: 2))")
            }
            guard History.append(path, message) else { return lua.fail("\(function): cannot write \(path): \(String(cString: strerror(errno)))", code: "EIO") }
            lua.push(true)
            return 1
        }
    }

    /// `maqet.history.event(path, record)` → true, or `nil, message, "EIO"`. `record` is a table
    /// (`vm`, `id`, `event` and any other members), encoded like `maqet.json.encode`.
    private static let event: LuaFunction = { L in
        Lua.call(L) { lua in
            let function = "maqet.history.event"
            let path = try path(lua, function)
            try lua.checkTable(2, function, "record")
            var encoder = JSONModule.Encoder(lua: lua)
            encoder.function = function
            guard case .object(let members) = try encoder.value(at: 2, depth: 0) else {
                throw LuaUsageError("\(function): record must be a table with string keys")
            }
            guard History.event(path, members) else { return lua.fail("\(function): cannot write \(path): \(String(cString: strerror(errno)))", code: "EIO") }
            lua.push(true)
            return 1
        }
    }

    /// `maqet.history.rotate(path, max_bytes)` → true when the file was over `max_bytes` and was
    /// renamed to `path.1`, false when there was nothing to do, or `nil, message, "EIO"` when the
    /// rename failed. The rotation of every VM log (events log, console log): the caller's cap.
    private static let rotate: LuaFunction = { L in
        Lua.call(L) { lua in
            let function = "maqet.history.rotate"
            let path = try path(lua, function)
            let limit = try lua.checkInteger(2, function, "max_bytes")
            guard limit > 0 else { throw LuaUsageError("\(function): max_bytes must be > 0, got \(limit)") }
            switch LogFile.rotate(path, maxBytes: limit) {
            case .rotated: lua.push(true)
            case .kept: lua.push(false)
            case .failed(let error):
                return lua.fail("\(function): cannot rename \(path) to \(path).1: \(String(cString: strerror(error)))", code: "EIO")
            }
            return 1
        }
    }
}
