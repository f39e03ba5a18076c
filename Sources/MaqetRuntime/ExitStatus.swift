/// The exit codes every maqet command uses. Documented in docs/exit-codes.md and `maqet --help`.
public enum ExitStatus: Int32, CaseIterable, Sendable {
    /// The command did what was asked.
    case ok = 0
    /// The command ran and failed (an SQL error, a problem `db check` found, a script that raised).
    case failure = 1
    /// The database was refused and left untouched: newer than this maqet, not a database, corrupt.
    case databaseRefused = 3
    /// A migration failed; the database was rolled back to where it was.
    case migrationFailed = 4
    /// A named thing (a VM, a backup file, a script) does not exist.
    case notFound = 5
    /// Bad command-line usage (unknown option, missing argument, invalid value, an ambiguous VM
    /// id prefix, an unusable maqet.conf).
    case usage = 64
    /// `maqet run --timeout` stopped the script.
    case timeout = 124
    /// Stopped by Ctrl-C (SIGINT).
    case interrupted = 130

    public static let helpText = """
        Exit codes: 0 ok; 1 failed (a full or read-only disk included); 3 refused, nothing changed (a database that is newer, not a database or corrupt, or has foreign side files; \
        rm of a running VM; pause/resume/reset of a VM in the wrong state); 4 migration failed (rolled back); 5 not found; 64 usage error (also a VM id prefix \
        several VMs share, an unusable maqet.conf); 124 timed out; \
        130 interrupted. `maqet run` exits with the script's os.exit(n) code when it calls it.
        """
}

/// An error a command reports to the user: one clear message and a documented exit status.
public struct MaqetError: Error, CustomStringConvertible {
    public var message: String
    public var status: ExitStatus

    public init(_ message: String, status: ExitStatus = .failure) {
        self.message = message
        self.status = status
    }

    public var description: String { message }
}
