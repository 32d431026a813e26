"""Message schemas shared by the client, the server and the function runtime."""
