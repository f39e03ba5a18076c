-- Each VM runs under its own runner process; remember that process's PID.
return {
    description = "Add runner_pid column for per-VM runner processes",
    up = function(db)
        if not db:has_column("vm_instances", "runner_pid") then
            db:exec("ALTER TABLE vm_instances ADD COLUMN runner_pid INTEGER")
        end
        db:exec("CREATE INDEX IF NOT EXISTS idx_vm_runner_pid ON vm_instances(runner_pid)")
    end,
}
