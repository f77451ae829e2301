from hypetunnel.cli.main import app

app()
