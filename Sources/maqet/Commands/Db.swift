import ArgumentParser
import Foundation
import MaqetCore
import MaqetRuntime

extension Maqet {
    struct Db: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "db",
            abstract: "Inspect, migrate, back up and restore the state database (instances.db).",
            discussion: """
                The state database lives in the data directory (--maqet-data-dir, $MAQET_DATA_DIR, \
                $XDG_DATA_HOME/maqet or ~/.local/share/maqet). Other commands migrate an older database \
                automatically; the db commands below do not, except 'db migrate', so you can inspect or \
                back up a database before it changes. See docs/database.md.
                Exit codes: 0 ok; 1 failed (or 'db check' found a problem); 3 database refused (newer \
                than this maqet, not a database, damaged); 4 migration failed (rolled back); 5 not found; \
                64 usage.
                """,
            subcommands: [Status.self, Migrate.self, Backup.self, Backups.self, Restore.self, Check.self]
        )
    }
}

extension Maqet.Db {
    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "status",
            abstract: "Show the database's location, schema version, pending migrations, history and backups.",
            discussion: """
                History rows show the SHA-256 recorded when each migration ran; EDITED marks a script \
                whose current text differs (edit a copy with --migrations-dir only for migrations that \
                have not run yet). Does not migrate.
                """)

        @OptionGroup var global: GlobalOptions
        @Option(help: "Output format: text, json or yaml.") var format: ReportFormat = .text

        func run() throws {
            do {
                let report = try StateMaintenance.status(global.stateConfiguration, verbosity: global.verbosity)
                format != .text ? printJSON(as: format, json(report)) : printText(report)
            } catch {
                throw maqet.exitCode(for: error)
            }
        }

        private func layoutName(_ layout: SchemaLayout) -> String {
            switch layout {
            case .empty: return "new"
            case .current: return "maqet"
            case .python: return "python-maqet"
            }
        }

        private func json(_ r: StatusReport) -> JSON {
            .object([
                ("data_dir", .string(r.dataDirectory)),
                ("database", .string(r.databasePath)),
                ("exists", .bool(r.exists)),
                ("version", .int(Int64(r.version.version))),
                ("latest_version", .int(Int64(r.latestVersion))),
                ("layout", .string(layoutName(r.version.layout))),
                ("migrations_source", .string(r.migrationsSource)),
                ("pending", .array(r.pending.map {
                    .object([("version", .int(Int64($0.migration.number))), ("name", .string($0.migration.name)),
                             ("file", .string($0.migration.displayPath)), ("description", .optional($0.description))])
                })),
                ("history", .array(r.history.map {
                    .object([("version", .int(Int64($0.entry.version))), ("name", .string($0.entry.name)),
                             ("checksum", .optional($0.entry.checksum)), ("current_checksum", .optional($0.currentChecksum)),
                             ("edited", .bool($0.edited)), ("applied_at", .string($0.entry.appliedAt)),
                             ("duration_ms", $0.entry.durationMs.map(JSON.double) ?? .null), ("source", .optional($0.entry.source))])
                })),
                ("backups", .array(r.backups.map {
                    .object([("path", .string($0.path)), ("kind", .string($0.kind.rawValue)), ("size", .int($0.size)), ("time", .string($0.time))])
                })),
            ])
        }

        private func printText(_ r: StatusReport) {
            var out = OutputBuffer()
            out.line("Data directory:  \(r.dataDirectory)")
            out.line("Database:        \(r.databasePath)\(r.exists ? "" : " (not created yet)")")
            var version = "\(r.version.version) (latest \(r.latestVersion))"
            if r.version.layout == .python { version += ", Python maqet layout" }
            if r.version.version > r.latestVersion { version += ", NEWER than this maqet" }
            out.line("Schema version:  \(version)")
            out.line("Migrations from: \(r.migrationsSource)")
            out.line()
            if r.pending.isEmpty {
                out.line("Pending migrations: none")
            } else {
                out.line("Pending migrations (\(r.pending.count)):")
                let width = r.pending.map(\.migration.fileName.count).max() ?? 0
                for p in r.pending { out.line("  \(padded(p.migration.fileName, width))   \(p.description ?? "(description unavailable)")") }
            }
            out.line()
            if r.history.isEmpty {
                out.line("History: none")
            } else {
                out.line("History:")
                let rows = r.history.map { a -> [String] in
                    [String(format: "%04d", a.entry.version), a.entry.name, a.entry.appliedAt,
                     a.entry.durationMs.map { String(format: "%.1f ms", $0) } ?? "-",
                     a.entry.source ?? "-",
                     (a.entry.checksum.map { String($0.prefix(16)) } ?? "-") + (a.edited ? "  EDITED" : "")]
                }
                for line in tableLines(header: ["Version", "Name", "Applied (UTC)", "Took", "Source", "SHA-256"], rows: rows) {
                    out.line("  " + line)
                }
            }
            out.line()
            if r.backups.isEmpty {
                out.line("Backups: none")
            } else {
                out.line("Backups (\(r.backups.count)):")
                for b in r.backups {
                    out.line("  \(b.path)  \(b.kind.rawValue)  \(MaqetRuntime.Backups.formatSize(b.size))  \(b.time)")
                }
            }
            out.flush()
        }
    }

    struct Migrate: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "migrate",
            abstract: "Bring the database to the latest schema now (other commands do it automatically).",
            discussion: """
                Takes the write lock, backs the database up (instances.db.backup-YYYYMMDD-HHMMSS, verified), \
                then runs every pending migration and the version update in one transaction. On failure \
                nothing changes and the message names the failing file and line and the restore command. \
                --dry-run lists what would run and writes nothing.
                """)

        @OptionGroup var global: GlobalOptions
        @Flag(help: "List the pending migrations without running them; writes nothing.") var dryRun = false

        func run() throws {
            do {
                let configuration = global.stateConfiguration
                var out = OutputBuffer()
                if dryRun {
                    let plan = try StateMaintenance.dryRun(configuration, verbosity: global.verbosity)
                    if plan.pending.isEmpty && plan.version.layout != .python {
                        out.line("Up to date at schema version \(plan.version.version); nothing would run.")
                    } else {
                        out.line("Would migrate \(configuration.databasePath) from version \(plan.version.version) to \(plan.latest)\(plan.version.layout == .empty ? " (new database, no backup)" : ", after a backup"):")
                        if plan.version.layout == .python { out.line("  convert the Python maqet schema_version table to maqet's layout (history kept)") }
                        let width = plan.pending.map(\.migration.fileName.count).max() ?? 0
                        for p in plan.pending { out.line("  \(padded(p.migration.fileName, width))   \(p.description ?? "")") }
                    }
                    out.flush()
                    return
                }
                let store = try StateStore.open(configuration, verbosity: global.verbosity, notice: { _ in })
                if let outcome = store.migration {
                    if let backup = outcome.backupPath {
                        out.line("Migrated \(configuration.databasePath) from version \(outcome.fromVersion) to \(outcome.toVersion).")
                        out.line("Backup: \(backup)")
                    } else {
                        out.line("Created \(configuration.databasePath) at version \(outcome.toVersion).")
                    }
                    for m in outcome.applied { out.line("  applied \(m.fileName)") }
                } else {
                    out.line("Up to date at schema version \(try MigrationSet.load(configuration).latestVersion); nothing to do.")
                }
                out.flush()
            } catch {
                throw maqet.exitCode(for: error)
            }
        }
    }

    struct Backup: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "backup",
            abstract: "Take a verified manual backup of the database as it is now.",
            discussion: """
                Copies through SQLite's online backup API (safe while other maqet processes run), then \
                checks the copy (integrity_check, schema version, row counts). Default name: \
                instances.db.manual-YYYYMMDD-HHMMSS beside the database. Manual backups are never \
                deleted automatically. Does not migrate first. Prints the backup's path.
                """)

        @OptionGroup var global: GlobalOptions
        @Argument(help: ArgumentHelp("Where to write the backup (must not exist).", valueName: "path")) var path: String?

        func run() throws {
            do {
                let written = try StateMaintenance.backup(global.stateConfiguration, to: path)
                var out = OutputBuffer()
                out.line(written)
                out.flush()
            } catch {
                throw maqet.exitCode(for: error)
            }
        }
    }

    struct Backups: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "backups",
            abstract: "List the backups in the data directory.",
            discussion: """
                automatic: taken before a migration or a restore (the newest $MAQET_KEEP_BACKUPS, default 5, \
                are kept); manual: taken with 'maqet db backup' (never deleted by maqet).
                """)

        @OptionGroup var global: GlobalOptions
        @Option(help: "Output format: text, json or yaml.") var format: ReportFormat = .text

        func run() throws {
            let configuration = global.stateConfiguration
            let list = MaqetRuntime.Backups.list(in: configuration.dataDirectory).reversed()
            let versions = list.map { StateMaintenance.version(ofBackup: $0.path) }
            if format != .text {
                printJSON(as: format, .array(zip(list, versions).map { b, v in
                    .object([("path", .string(b.path)), ("kind", .string(b.kind.rawValue)), ("size", .int(b.size)),
                             ("time", .string(b.time)), ("schema_version", v.map { .int(Int64($0)) } ?? .null)])
                }))
                return
            }
            var out = OutputBuffer()
            if list.isEmpty {
                out.line("No backups in \(configuration.dataDirectory).")
            } else {
                let rows = zip(list, versions).map { b, v in
                    [b.path, b.kind.rawValue, MaqetRuntime.Backups.formatSize(b.size), b.time, v.map(String.init) ?? "?"]
                }
                for line in tableLines(header: ["Path", "Kind", "Size", "Taken", "Version"], rows: rows) { out.line(line) }
            }
            out.flush()
        }
    }

    struct Restore: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "restore",
            abstract: "Replace the database's contents with a backup.",
            discussion: """
                Verifies the backup, takes an automatic backup of the current database, then copies the \
                backup in through SQLite's online backup API (so other maqet processes never see a \
                half-written file; do not use cp while maqet may be running). Refuses while any VM is \
                recorded as running unless --force. BACKUP may be a path or a file name in the data \
                directory. A backup from an older schema is migrated by the next command. A live file \
                that is not a database or is damaged is moved aside (instances.db.damaged-...) and the \
                backup restored into a new file.
                """)

        @OptionGroup var global: GlobalOptions
        @Argument(help: ArgumentHelp("The backup file to restore.", valueName: "backup")) var backup: String
        @Flag(help: "Restore even while VMs are recorded as running.") var force = false

        func run() throws {
            do {
                let outcome = try StateMaintenance.restore(global.stateConfiguration, backup: backup, force: force)
                var out = OutputBuffer()
                out.line("Restored \(outcome.databasePath) from \(outcome.restoredFrom) (schema version \(outcome.version)).")
                if let previous = outcome.previousBackup { out.line("The database as it was before: \(previous)") }
                if let moved = outcome.movedAside { out.line("The damaged file it replaced was moved to \(moved)") }
                if outcome.version < outcome.latestVersion {
                    out.line("It will be migrated to version \(outcome.latestVersion) by the next maqet command (or: maqet db migrate).")
                }
                out.flush()
            } catch {
                throw maqet.exitCode(for: error)
            }
        }
    }

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "check",
            abstract: "Check the database: integrity, foreign keys, and the schema against the migrations.",
            discussion: """
                Runs PRAGMA integrity_check and PRAGMA foreign_key_check, and compares the schema (tables, \
                columns, indexes, foreign keys, triggers) with what the migrations up to the database's \
                version produce on a fresh database. Exits 1 and lists each problem when there is one. \
                Does not migrate.
                """)

        @OptionGroup var global: GlobalOptions
        @Option(help: "Output format: text, json or yaml.") var format: ReportFormat = .text

        func run() throws {
            let report: CheckReport
            do {
                report = try StateMaintenance.check(global.stateConfiguration, verbosity: global.verbosity)
            } catch {
                throw maqet.exitCode(for: error)
            }
            if format != .text {
                printJSON(as: format, .object([
                    ("ok", .bool(report.ok)),
                    ("integrity_check", .array(report.integrity.map(JSON.string))),
                    ("foreign_key_violations", .array(report.foreignKeyViolations.map(JSON.string))),
                    ("schema_missing", .array(report.missing.map(JSON.string))),
                    ("schema_unexpected", .array(report.unexpected.map(JSON.string))),
                    ("problems", .array(report.problems.map(JSON.string))),
                    ("notes", .array(report.notes.map(JSON.string))),
                ]))
            } else {
                var out = OutputBuffer()
                out.line("integrity_check: \(report.integrity == ["ok"] ? "ok" : "FAILED")")
                out.line("foreign_key_check: \(report.foreignKeyViolations.isEmpty ? "ok" : "\(report.foreignKeyViolations.count) violation(s)")")
                out.line("schema: \(report.missing.isEmpty && report.unexpected.isEmpty ? "matches the migrations" : "differs from the migrations")")
                for problem in report.problems { out.line("problem: \(problem)") }
                for note in report.notes { out.line("note: \(note)") }
                out.flush()
            }
            if !report.ok {
                throw failure("db check found \(report.problems.count) problem(s)", .failure)
            }
        }
    }
}
