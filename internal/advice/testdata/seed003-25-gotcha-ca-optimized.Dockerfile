# ✅ Good: Copy CA certs
FROM scratch
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/
COPY myapp /myapp
CMD ["/myapp"]
