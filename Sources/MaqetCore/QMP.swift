import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An asynchronous QMP event ("STOP", "SHUTDOWN", …). `data` is `{}` when the event has none;
/// `timestamp` is QEMU's, in seconds since the Unix epoch.
public struct QMPEvent: Sendable {
    public let name: String
    public let data: JSONValue
    public let timestamp: Double

    public init(name: String, data: JSONValue, timestamp: Double) {
        self.name = name
        self.data = data
        self.timestamp = timestamp
    }
}

/// Why a QMP exchange failed. `codeName` is the short code scripts see as the third result.
public enum QMPError: Error, CustomStringConvertible {
    /// The socket could not be connected (also a path longer than `sun_path`: ENAMETOOLONG).
    case connect(path: String, errno: Int32)
    /// What timed out: "connect", "greeting", or the command whose reply did not come.
    case timeout(String)
    /// The connection is closed: QEMU hung up (for `quit` that is success, not this error) or
    /// `close()` was called.
    case disconnected(String)
    /// Malformed JSON or a message that is not what QMP sends.
    case protocolError(String)
    /// QEMU answered with `{"error": {"class": …, "desc": …}}`.
    case commandFailed(command: String, errorClass: String, description: String)

    public var description: String {
        switch self {
        case let .connect(path, errno) where errno == ENAMETOOLONG:
            return "connect \(path): socket path is longer than \(UnixSocketAddress.maximumPathLength) bytes"
        case let .connect(path, errno):
            return "connect \(path): \(String(cString: strerror(errno)))"
        case .timeout(let what):
            return "QMP: timed out \(QMPError.waiting(for: what))"
        case .disconnected(let what):
            return "QMP: the connection is closed (\(what))"
        case .protocolError(let message):
            return "QMP protocol error: \(message)"
        case let .commandFailed(command, errorClass, description):
            return "QMP error \(errorClass) (\(command)): \(description)"
        }
    }

    /// "connecting", "waiting for the greeting", "waiting for the reply to query-status".
    static func waiting(for what: String) -> String {
        switch what {
        case "connect": return "connecting"
        case "greeting": return "waiting for the greeting"
        default: return "waiting for the reply to \(what)"
        }
    }

    /// "ENOENT"/"ECONNREFUSED"/… for connect, "ETIMEDOUT", "EPIPE", "EPROTO", or the QMP error class.
    public var codeName: String {
        switch self {
        case .connect(_, let errno): return errnoName(errno)
        case .timeout: return "ETIMEDOUT"
        case .disconnected: return "EPIPE"
        case .protocolError: return "EPROTO"
        case .commandFailed(_, let errorClass, _): return errorClass
        }
    }
}

/// A client for one QMP monitor socket (a Unix stream socket QEMU listens on).
///
/// One command is in flight at a time; each carries a unique `"id"` and the reply with that id is
/// its answer (a late reply to a command that timed out is skipped). Events that arrive at any
/// point are queued and handed out, in order, by `nextEvent` / `drainEvents`. The socket is
/// non-blocking and every wait has a deadline; `send` uses `MSG_NOSIGNAL`, so a peer that went
/// away yields `EPIPE` rather than a SIGPIPE. Not thread-safe: use one client from one thread.
public final class QMPClient {
    /// A line longer than this is treated as a protocol error (a `query-qmp-schema` reply is ~200 KB).
    public static let maximumMessageBytes = 64 << 20

    /// The `"QMP"` member of QEMU's greeting: `{"version": {"qemu": {...}, "package": …}, "capabilities": [...]}`.
    public private(set) var greeting: JSONValue = .null
    /// The timeout `execute` uses when it is not given one.
    public var defaultTimeoutMs: Int
    /// Checked at least every 50 ms while waiting; when it returns true the wait ends as a timeout.
    /// (`maqet run` sets it so Ctrl-C and `--timeout` interrupt a blocking QMP call.)
    public var shouldStop: () -> Bool = { false }

    public let path: String
    private var fd: Int32
    private var buffer: [UInt8] = []
    /// Where the unread part of `buffer` begins: lines taken off the front only move this, and the
    /// consumed bytes are dropped in one go once they are most of the buffer (removing each line
    /// from the front copied the rest every time: a burst of N events cost N² byte moves).
    private var start = 0
    /// Bytes of `buffer` already searched for a newline (from `start`).
    private var scanned = 0
    private var events: [QMPEvent] = []
    private var peerClosed = false
    private var nextID = 1

    /// Connects (non-blocking connect + poll, timeout), reads the greeting, negotiates capabilities.
    /// The corresponding C functions are `socket`, `connect` and `poll`.
    /// `shouldStop` is the initial value of the property of that name.
    public init(path: String, timeoutMs: Int = 5000, shouldStop: @escaping () -> Bool = { false }) throws {
        self.path = path
        defaultTimeoutMs = timeoutMs
        self.shouldStop = shouldStop
        fd = -1
        let deadline = monotonicMs() + Int64(max(timeoutMs, 0))
        let address: UnixSocketAddress
        do { address = try UnixSocketAddress(path: path) } catch let error as SystemError {
            throw QMPError.connect(path: path, errno: error.errno)
        }

        let socketFD = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard socketFD >= 0 else { throw QMPError.connect(path: path, errno: errno) }
        fd = socketFD
        // From here on a thrown error must not leak the descriptor.
        do {
            try Self.connect(socketFD, path: path, address: address, deadline: deadline, shouldStop: shouldStop)
            let first = try readMessage(deadline: deadline, waitingFor: "greeting")
            guard case .object(let members) = first, let qmp = members.first(where: { $0.key == "QMP" })?.value else {
                throw QMPError.protocolError("expected the QMP greeting, got \(Self.brief(first))")
            }
            greeting = qmp
            _ = try execute("qmp_capabilities", timeoutMs: Int(max(deadline - monotonicMs(), 0)))
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    /// The socket, for `poll` in event loops; -1 after `close()`.
    public var fileDescriptor: Int32 { fd }

    /// True after `close()`, or once QEMU has closed its end (events read before that are still
    /// returned by `nextEvent` / `drainEvents`).
    public var isClosed: Bool { fd < 0 || peerClosed }

    /// Closes the socket. Idempotent.
    public func close() {
        if fd >= 0 { _ = Glibc.close(fd) }
        fd = -1
    }

    // MARK: Commands and events

    /// Sends a command with a unique "id"; waits for the reply with that id; events arriving
    /// meanwhile are queued (never lost). Returns the `"return"` value; a QMP error throws
    /// `.commandFailed`. `quit`: EOF before the reply counts as success (returns `.object([])`).
    public func execute(_ command: String, arguments: JSONValue? = nil, timeoutMs: Int? = nil) throws -> JSONValue {
        guard fd >= 0 else { throw QMPError.disconnected("close() was called") }
        let deadline = monotonicMs() + Int64(max(timeoutMs ?? defaultTimeoutMs, 0))
        let id = "maqet-\(nextID)"
        nextID += 1
        var members: [(key: String, value: JSONValue)] = [("execute", .string(command))]
        if let arguments { members.append(("arguments", arguments)) }
        members.append(("id", .string(id)))
        let text: String
        do {
            text = try JSONValue.object(members).serialized() + "\n"
        } catch {
            throw QMPError.protocolError("cannot encode the arguments of \(command): \(error)")
        }
        let isQuit = command == "quit"
        if peerClosed {
            throw QMPError.disconnected("QEMU hung up before \(command) was sent")
        }
        do {
            try send(Array(text.utf8), deadline: deadline, command: command)
        } catch QMPError.disconnected where isQuit {
            return .object([])
        }
        while true {
            let message: JSONValue
            do {
                message = try readMessage(deadline: deadline, waitingFor: command)
            } catch QMPError.disconnected where isQuit {
                return .object([])
            }
            guard case .object(let fields) = message else {
                throw QMPError.protocolError("expected a JSON object, got \(Self.brief(message))")
            }
            func field(_ name: String) -> JSONValue? { fields.first(where: { $0.key == name })?.value }
            if let replyID = field("id"), replyID != .string(id) { continue } // a late reply to an earlier command
            if let value = field("return") { return value }
            if case .object(let error)? = field("error") {
                func text(_ name: String) -> String {
                    if case .string(let s)? = error.first(where: { $0.key == name })?.value { return s }
                    return ""
                }
                throw QMPError.commandFailed(command: command, errorClass: text("class"), description: text("desc"))
            }
            throw QMPError.protocolError("unexpected message while waiting for the reply to \(command): \(Self.brief(message))")
        }
    }

    /// The next queued or arriving event; nil on timeout (nil timeout = wait forever); throws
    /// `.disconnected` at EOF once the queue is empty.
    public func nextEvent(timeoutMs: Int?) throws -> QMPEvent? {
        let deadline = timeoutMs.map { monotonicMs() + Int64(max($0, 0)) }
        while events.isEmpty {
            guard fd >= 0 else { throw QMPError.disconnected("close() was called") }
            // Messages already buffered come first, also those read together with the EOF.
            if let message = try takeMessage() {
                try handleUnsolicited(message)
                continue
            }
            if peerClosed { throw QMPError.disconnected("QEMU hung up") }
            do {
                guard try fill(deadline: deadline) else { return nil }
            } catch QMPError.disconnected {
                if events.isEmpty { throw QMPError.disconnected("QEMU hung up") }
            }
        }
        return events.removeFirst()
    }

    /// For event loops: after `poll` said the socket is readable, reads what is available without
    /// blocking and returns the queued events (possibly none). Throws `.disconnected` at EOF once
    /// every event read before it has been returned.
    public func drainEvents() throws -> [QMPEvent] {
        guard fd >= 0 else { throw QMPError.disconnected("close() was called") }
        if !peerClosed {
            do {
                _ = try fill(deadline: monotonicMs())
            } catch QMPError.disconnected {}
        }
        while let message = try takeMessage() { try handleUnsolicited(message) }
        if events.isEmpty && peerClosed { throw QMPError.disconnected("QEMU hung up") }
        let out = events
        events.removeAll()
        return out
    }

    // MARK: Framing

    /// Reads until one complete message is buffered and returns it. Events read meanwhile are
    /// queued. `what` is "greeting" or the command whose reply is awaited.
    private func readMessage(deadline: Int64, waitingFor what: String) throws -> JSONValue {
        while true {
            if let message = try takeMessage() {
                if Self.isEvent(message) {
                    try handleUnsolicited(message)
                    continue
                }
                return message
            }
            if peerClosed { throw QMPError.disconnected("QEMU hung up while \(QMPError.waiting(for: what))") }
            do {
                guard try fill(deadline: deadline) else { throw QMPError.timeout(what) }
            } catch QMPError.disconnected {
                throw QMPError.disconnected("QEMU hung up while \(QMPError.waiting(for: what))")
            }
        }
    }

    private static func isEvent(_ message: JSONValue) -> Bool {
        if case .object(let fields) = message { return fields.contains { $0.key == "event" } }
        return false
    }

    /// Queues an event; anything else that is not a reply is skipped (a stray reply).
    private func handleUnsolicited(_ message: JSONValue) throws {
        guard case .object(let fields) = message else {
            throw QMPError.protocolError("expected a JSON object, got \(Self.brief(message))")
        }
        func field(_ name: String) -> JSONValue? { fields.first(where: { $0.key == name })?.value }
        guard let eventField = field("event") else { return } // a late reply to a command that timed out
        guard case .string(let name) = eventField else {
            throw QMPError.protocolError("event name is not a string: \(Self.brief(message))")
        }
        var timestamp = 0.0
        if case .object(let t)? = field("timestamp") {
            func number(_ key: String) -> Double {
                switch t.first(where: { $0.key == key })?.value {
                case .integer(let i)?: return Double(i)
                case .double(let d)?: return d
                default: return 0
                }
            }
            timestamp = number("seconds") + number("microseconds") / 1_000_000
        }
        events.append(QMPEvent(name: name, data: field("data") ?? .object([]), timestamp: timestamp))
    }

    /// Removes and parses the first complete line of the buffer, or returns nil when there is none.
    private func takeMessage() throws -> JSONValue? {
        while true {
            guard let newline = Self.newline(in: buffer, from: max(scanned, start)) else {
                scanned = buffer.count
                if start > 0 {
                    buffer.removeFirst(start)
                    scanned -= start
                    start = 0
                }
                if buffer.count > Self.maximumMessageBytes {
                    throw QMPError.protocolError("a message longer than \(Self.maximumMessageBytes) bytes")
                }
                return nil
            }
            let line = Array(buffer[start..<newline])
            start = newline + 1
            scanned = start
            // Whitespace-only lines (a stray "\r\n") carry nothing.
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) { continue }
            do {
                return try JSONValue.parse(bytes: line)
            } catch let error as JSONSyntaxError {
                throw QMPError.protocolError("malformed JSON (\(error)): \(Self.brief(line))")
            }
        }
    }

    /// The index of the first "\n" in `bytes` at or after `from` (memchr: a 64 MiB line is searched
    /// once, at memory speed, also in debug and sanitizer builds).
    private static func newline(in bytes: [UInt8], from: Int) -> Int? {
        bytes.withUnsafeBufferPointer { raw -> Int? in
            guard let base = raw.baseAddress, from < raw.count,
                  let hit = memchr(base + from, 0x0A, raw.count - from) else { return nil }
            return UnsafePointer(hit.assumingMemoryBound(to: UInt8.self)) - base
        }
    }

    /// Waits (until `deadline`; nil = forever) for the socket to be readable and appends what is
    /// available to the buffer. Returns false on timeout. Throws `.disconnected` at EOF.
    @discardableResult
    private func fill(deadline: Int64?) throws -> Bool {
        guard fd >= 0 else { throw QMPError.disconnected("close() was called") }
        guard try waitFor(Int16(POLLIN), deadline: deadline) else { return false }
        var chunk = [UInt8](repeating: 0, count: 65536)
        var gotData = false
        while true {
            let n = chunk.withUnsafeMutableBytes { raw in
                retryingEINTR { Glibc.read(fd, raw.baseAddress, raw.count) }
            }
            if n > 0 {
                chunk.withUnsafeBufferPointer { buffer.append(contentsOf: UnsafeBufferPointer(rebasing: $0[0..<n])) }
                gotData = true
                if n < chunk.count { return true }
                continue
            }
            if n == 0 || errno == ECONNRESET {
                peerClosed = true
                if gotData { return true }
                throw QMPError.disconnected("QEMU hung up")
            }
            if errno == EAGAIN || errno == EWOULDBLOCK { return true }
            let e = errno
            throw QMPError.protocolError("read: \(String(cString: strerror(e)))")
        }
    }

    /// Writes all of `bytes`, waiting for the socket to accept more until `deadline`.
    private func send(_ bytes: [UInt8], deadline: Int64, command: String) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                retryingEINTR { Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL)) }
            }
            if n > 0 {
                offset += n
                continue
            }
            switch errno {
            case EAGAIN, EWOULDBLOCK:
                guard try waitFor(Int16(POLLOUT), deadline: deadline) else { throw QMPError.timeout(command) }
            case EPIPE, ECONNRESET, ENOTCONN:
                peerClosed = true
                throw QMPError.disconnected("QEMU hung up while sending \(command)")
            default:
                let e = errno
                throw QMPError.protocolError("send: \(String(cString: strerror(e)))")
            }
        }
    }

    /// `poll` for `events` in slices of at most 50 ms (so `shouldStop` is seen), retrying EINTR.
    /// Returns false when `deadline` passed (or `shouldStop` said so); true when ready (or hung up).
    private func waitFor(_ events: Int16, deadline: Int64?) throws -> Bool {
        try Self.poll(fd, events, deadline: deadline, shouldStop: shouldStop)
    }

    private static func poll(_ fd: Int32, _ events: Int16, deadline: Int64?, shouldStop: () -> Bool) throws -> Bool {
        while true {
            // Always poll once, also when the deadline has passed (drainEvents polls with "now").
            var slice: Int64 = 50
            if let deadline { slice = max(0, min(slice, deadline - monotonicMs())) }
            var entry = pollfd(fd: fd, events: events, revents: 0)
            let n = Glibc.poll(&entry, 1, Int32(slice))
            if n > 0 { return true }
            if n < 0 && errno != EINTR {
                let e = errno
                throw QMPError.protocolError("poll: \(String(cString: strerror(e)))")
            }
            if shouldStop() { return false }
            if let deadline, monotonicMs() >= deadline { return false }
        }
    }

    /// Non-blocking `connect` to a Unix socket, waiting for it until `deadline`.
    private static func connect(_ fd: Int32, path: String, address: UnixSocketAddress, deadline: Int64, shouldStop: () -> Bool) throws {
        while true {
            let rc = address.connect(fd)
            if rc == 0 { return }
            switch errno {
            case EINTR:
                continue
            case EAGAIN:
                // A Unix socket whose accept backlog is full: try again shortly.
                if monotonicMs() >= deadline || shouldStop() { throw QMPError.timeout("connect") }
                usleep(10_000)
            case EINPROGRESS:
                guard try poll(fd, Int16(POLLOUT), deadline: deadline, shouldStop: shouldStop) else { throw QMPError.timeout("connect") }
                var error: Int32 = 0
                var size = socklen_t(MemoryLayout<Int32>.size)
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size)
                if error != 0 { throw QMPError.connect(path: path, errno: error) }
                return
            default:
                throw QMPError.connect(path: path, errno: errno)
            }
        }
    }

    /// A short, single-line rendering of a message for error texts.
    private static func brief(_ value: JSONValue) -> String {
        let text = (try? value.serialized()) ?? "?"
        return text.count > 200 ? String(text.prefix(200)) + "…" : text
    }

    private static func brief(_ bytes: [UInt8]) -> String {
        let text = String(decoding: bytes.prefix(200), as: UTF8.self)
        return bytes.count > 200 ? text + "…" : text
    }
}
