"""Tasks as users see them: the task store, status names, task ids and scheduled jobs."""
