import ArgumentParser
import Foundation
import MaqetCore

extension Maqet {
    /// `maqet console NAME [--log [--follow] [--lines N]]`: scripts/lifecycle/console.lua finds
    /// the console; this file does the terminal and the file reading.
    struct Console: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "console",
            abstract: "Attach the terminal to a running VM's serial console, or print its console log.",
            discussion: """
                Attached, what the guest prints goes to the terminal and what you type goes to the \
                guest (the terminal is in raw mode; it is restored however the command ends). Press \
                Ctrl-] to detach; the VM keeps running. One attach at a time: a second one is refused \
                with the pid of the first ('already attached (pid N)'), and scripts cannot type \
                (console:send) meanwhile. When stdin is not a terminal, it is read as a pipe: its bytes \
                are typed into the guest, and at its end (or a Ctrl-] byte) the command waits until \
                QEMU has taken the input and exits; what the guest prints is copied to stdout \
                meanwhile. --log prints the console log (every boot, appended; <data dir>/logs/\
                <name>.console.log), --lines N only its last N lines, --follow keeps printing what \
                the guest prints until Ctrl-C or until the VM stops. A VM whose config sets up its own \
                serial line (serial:, -serial, a serial -device) has no maqet console. See \
                docs/console.md. Exit status: 0 ok (detached, or the VM stopped); 1 not running, \
                already attached, or the VM has its own serial line; 5 no such VM; 64 bad usage.
                """)

        @OptionGroup var global: GlobalOptions

        @Argument(help: ArgumentHelp("The VM's name.", valueName: "name"))
        var name: String

        @Flag(help: "Print the console log instead of attaching.")
        var log = false

        @Flag(help: "With --log: keep printing until Ctrl-C or until the VM stops.")
        var follow = false

        @Option(help: ArgumentHelp("With --log: print only the last N lines.", valueName: "n"))
        var lines: Int?

        /// The byte that detaches (Ctrl-], as in telnet and virsh console).
        static let escapeByte: UInt8 = 0x1d

        func validate() throws {
            if (follow || lines != nil) && !log { throw ValidationError("--follow and --lines go with --log") }
            if let lines, lines < 0 { throw ValidationError("--lines must be 0 or more") }
        }

        func run() throws {
            let info = try global.runLifecycleWorkflow("console.lua", [("name", .string(name)), ("attach", .bool(!log))])
            guard let socket = info["socket"]?.stringValue, let lock = info["lock"]?.stringValue,
                  let logPath = info["log"]?.stringValue else {
                throw failure("console.lua returned no console paths for VM '\(name)'")
            }
            if log {
                try printLog(logPath, socket: socket, running: info["running"] == .bool(true))
            } else {
                try attach(socket: socket, lock: lock)
            }
        }

        // MARK: Attaching

        private func attach(socket: String, lock: String) throws {
            let lockFD: Int32
            do {
                lockFD = try SerialConsole.lock(lock)
            } catch SerialConsole.Failure.busy(let pid) {
                throw failure("VM '\(name)': the console is already attached\(pid.map { " (pid \($0))" } ?? ""); only one attach at a time")
            } catch {
                throw failure("VM '\(name)': \(error)")
            }
            defer { _ = close(lockFD) }
            let fd: Int32
            do {
                fd = try SerialConsole.connect(socket)
            } catch {
                throw failure("VM '\(name)' is not running: \(error)")
            }
            defer { _ = close(fd) }

            // Stop signals arrive on a signalfd, so the terminal is restored before the command ends.
            var (signalFD, previousMask) = SerialConsole.signalDescriptor([SIGINT, SIGTERM, SIGHUP, SIGQUIT])
            if signalFD < 0 {
                // No signalfd: leave the signals deliverable (a signal then ends the command
                // without restoring the terminal, but it never goes unheard).
                pthread_sigmask(SIG_SETMASK, &previousMask, nil)
                signalFD = -1
            }
            let previousPipe = Glibc.signal(SIGPIPE, SIG_IGN)
            defer {
                if signalFD >= 0 { _ = close(signalFD) }
                pthread_sigmask(SIG_SETMASK, &previousMask, nil)
                Glibc.signal(SIGPIPE, previousPipe)
            }

            let terminal = isatty(STDIN_FILENO) == 1
            var saved = termios()
            if terminal && tcgetattr(STDIN_FILENO, &saved) == 0 {
                var raw = saved
                cfmakeraw(&raw)
                _ = tcsetattr(STDIN_FILENO, TCSANOW, &raw)
                FileHandle.standardError.write(Data("Connected to the console of VM '\(name)'. Escape character is ^] (Ctrl-]).\r\n".utf8))
            }
            defer {
                if terminal {
                    _ = tcsetattr(STDIN_FILENO, TCSANOW, &saved)
                }
            }

            let end = relay(socket: fd, signalFD: signalFD)
            if terminal { _ = tcsetattr(STDIN_FILENO, TCSANOW, &saved) }
            switch end {
            case .detached:
                if terminal { FileHandle.standardError.write(Data("\nDetached from the console of VM '\(name)'.\n".utf8)) }
            case .closed(let afterInput):
                if !afterInput { FileHandle.standardError.write(Data("\nmaqet: the console of VM '\(name)' closed (the VM stopped)\n".utf8)) }
            case .signal(let number):
                throw ExitCode(128 + number)
            }
        }

        private enum End {
            case detached
            /// QEMU closed the connection: the VM stopped, or (afterInput) it took all of a pipe's input.
            case closed(afterInput: Bool)
            case signal(Int32)
        }

        /// Copies socket → stdout and stdin → socket until Ctrl-], a stop signal, or QEMU closes.
        private func relay(socket fd: Int32, signalFD: Int32) -> End {
            var buffer = [UInt8](repeating: 0, count: 4096)
            var inputOpen = true
            while true {
                var fds = [
                    pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                    pollfd(fd: signalFD, events: Int16(POLLIN), revents: 0),
                    pollfd(fd: inputOpen ? STDIN_FILENO : -1, events: Int16(POLLIN), revents: 0),
                ]
                if poll(&fds, nfds_t(fds.count), -1) < 0 {
                    if errno == EINTR { continue }
                    return .closed(afterInput: !inputOpen)
                }
                if fds[1].revents != 0 {
                    let number = SerialConsole.readSignal(signalFD)
                    if number == 0 { continue }
                    return .signal(number)
                }
                if fds[0].revents != 0 {
                    let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { return .closed(afterInput: !inputOpen) }
                    _ = buffer.withUnsafeBytes { SerialConsole.writeAll(STDOUT_FILENO, UnsafeRawBufferPointer(rebasing: $0[..<n])) }
                }
                if inputOpen && fds[2].revents != 0 {
                    let n = buffer.withUnsafeMutableBytes { read(STDIN_FILENO, $0.baseAddress, $0.count) }
                    if n < 0 && errno == EINTR { continue }
                    let chunk = buffer.prefix(max(n, 0))
                    let escape = chunk.firstIndex(of: Self.escapeByte)
                    let typed = escape.map { chunk[..<$0] } ?? chunk[...]
                    if !typed.isEmpty {
                        let sent = Array(typed).withUnsafeBytes { SerialConsole.writeAll(fd, $0) }
                        if !sent { return .closed(afterInput: false) }
                    }
                    if escape != nil && isatty(STDIN_FILENO) == 1 { return .detached }
                    if n <= 0 || escape != nil {
                        // The end of a pipe's input: let QEMU read it all; it closes its end then.
                        inputOpen = false
                        _ = shutdown(fd, Int32(SHUT_WR))
                    }
                }
            }
        }

        // MARK: The log

        private func printLog(_ path: String, socket: String, running: Bool) throws {
            var position: off_t = 0
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            if fd < 0 {
                if errno != ENOENT { throw failure("VM '\(name)': cannot read \(path): \(String(cString: strerror(errno)))") }
                global.notice("VM '\(name)' has no console output yet (\(path) does not exist)")
            } else {
                defer { _ = close(fd) }
                var info = stat()
                fstat(fd, &info)
                let size = info.st_size
                position = lines.map { Self.startOfLastLines($0, fd: fd, size: size) } ?? 0
                position = copy(fd, from: position, to: size)
            }
            guard follow && running else { return }
            var lastSize: off_t = position
            while true {
                var pause = timespec(tv_sec: 0, tv_nsec: 100_000_000)
                _ = nanosleep(&pause, nil)
                let gone = access(socket, F_OK) != 0 // the runner removes the socket when QEMU exits
                var info = stat()
                if stat(path, &info) == 0 {
                    if info.st_size < lastSize { position = 0 } // rotated by a new start
                    if info.st_size > position {
                        let fd = open(path, O_RDONLY | O_CLOEXEC)
                        if fd >= 0 {
                            position = copy(fd, from: position, to: info.st_size)
                            _ = close(fd)
                        }
                    }
                    lastSize = info.st_size
                }
                if gone { return }
            }
        }

        /// Copies bytes [from, to) of `fd` to stdout; returns where it stopped.
        private func copy(_ fd: Int32, from start: off_t, to end: off_t) -> off_t {
            var position = start
            var buffer = [UInt8](repeating: 0, count: 65536)
            while position < end {
                let want = Int(min(off_t(buffer.count), end - position))
                let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, want, position) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                guard buffer.withUnsafeBytes({ SerialConsole.writeAll(STDOUT_FILENO, UnsafeRawBufferPointer(rebasing: $0[..<n])) }) else { break }
                position += off_t(n)
            }
            return position
        }

        /// The offset where the last `count` lines of the file begin (a last line without a
        /// newline, such as a prompt, counts as a line).
        static func startOfLastLines(_ count: Int, fd: Int32, size: off_t) -> off_t {
            if count == 0 { return size }
            var newlines = 0
            var end = size
            var buffer = [UInt8](repeating: 0, count: 65536)
            var first = true
            while end > 0 {
                let start = max(0, end - off_t(buffer.count))
                let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, Int(end - start), start) }
                if n <= 0 { return 0 }
                var i = n - 1
                if first && buffer[i] == UInt8(ascii: "\n") { i -= 1 } // the last line's own newline
                first = false
                while i >= 0 {
                    if buffer[i] == UInt8(ascii: "\n") {
                        newlines += 1
                        if newlines == count { return start + off_t(i) + 1 }
                    }
                    i -= 1
                }
                end = start
            }
            return 0
        }
    }
}
