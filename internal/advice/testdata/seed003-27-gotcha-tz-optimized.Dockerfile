# ✅ Good: Copy timezone data
FROM scratch
COPY --from=builder /usr/share/zoneinfo /usr/share/zoneinfo
COPY myapp /myapp
CMD ["/myapp"]
