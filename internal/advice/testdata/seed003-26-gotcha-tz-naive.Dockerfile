# ❌ Bad: No timezone data
FROM scratch
COPY myapp /myapp
CMD ["/myapp"]
# time.LoadLocation will fail
